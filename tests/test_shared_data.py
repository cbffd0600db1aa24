"""Tests that read ../shared/data skip, saying why, where it is missing; in CI (CI=true) they fail instead."""
import pytest

from conftest import require_shared


def test_missing_shared_data_skips_with_the_reason_but_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="nope not found: these tests read the real BraTS cases"):
        require_shared(tmp_path / "nope")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nope not found"):
        require_shared(tmp_path / "nope")
    assert require_shared(tmp_path) == tmp_path
