"""The shipped model's card: the markdown written beside the shipped model files, and the helpers behind its numbers.

``scripts/export_pretrained.py`` scores a run and calls :func:`card_markdown` on the machine-readable card
(``model_card.json``). The rows of earlier runs that the card compares against are data, not code:
``brats_keras/pretrained/card_history.json`` (:func:`read_history`), or any dict of the same shape passed in.
The shipped files and the reading of their card (:func:`brats_keras.pretrained.card_case`) stay in
:mod:`brats_keras.pretrained`.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from .pretrained import HERE
from .runs import CASE_DICE_MEAN

#: the comparison rows of earlier runs: {"against_targets": [row], "target": cells, "earlier_runs": [row]},
#: a row being {"run": text, "WT": cell, "TC": cell, "ET": cell}
HISTORY_JSON = HERE / "card_history.json"

REGIONS = ("WT", "TC", "ET")


def read_history(path=HISTORY_JSON) -> dict:
    """The comparison rows of earlier runs (see :data:`HISTORY_JSON`)."""
    return json.loads(Path(path).read_text())


def _row(row: dict) -> str:
    return f"| {row['run']} | " + " | ".join(str(row[r]) for r in REGIONS) + " |"


def cells(scores: dict, hd95=True, bold=False) -> str:
    """Table cells ``Dice / HD95`` for WT, TC and ET."""
    def cell(s):
        d = f"**{s['dice']:.3f}**" if bold else f"{s['dice']:.3f}"
        return f"{d} / {s['hd95']:.1f}" if hd95 else d
    return " | ".join(cell(scores[r]) for r in ("WT", "TC", "ET"))


def late_val_range(log: list[dict], monitor=CASE_DICE_MEAN) -> list[float]:
    """Lowest and highest whole-case validation Dice over the second half of training."""
    vals = [r[monitor] for r in log[len(log) // 2:] if math.isfinite(r.get(monitor, math.nan))]
    return [float(min(vals)), float(max(vals))] if vals else [float("nan")] * 2


#: run settings that name places or logging, not the recipe
_NOT_RECIPE = {"data", "out", "split_file", "verbose", "init_from", "task"}  # task: the data's
#: settings whose ``brats-keras train`` flag is not ``--`` + the name with dashes
_FLAG = {"output": "--head"}


def train_command(cfg: dict, out: str = "runs/pretrained", data: str = "data/real_2mm",
                  split_file: str | None = None, init_from: str | None = None) -> str:
    """The ``brats-keras train`` command that reproduces a run: the recipe plus the flags it changed.

    A fold run of a cross-validation (``cfg["folds"]`` set) gets ``--fold $k`` and no ``--split-file`` (the fold
    split comes from the seed): the command of every fold, for a shell loop over ``k``. The run's own
    ``init_from`` names a file on the machine that trained it, so it is left out; ``init_from`` given here is
    the file the command starts from instead (``--init-from``, the second stage of a two-stage recipe).

    Raises:
        ValueError naming the setting when the run changed one that no flag of ``brats-keras train`` sets
        (``lr_factor``, ``lr_patience``, ``split_seed``, or a value set back to None): no command reproduces it.
    """
    from .training import TrainConfig

    base = asdict(TrainConfig.from_recipe("pretrained"))
    flags = []
    for key, value in cfg.items():
        if key == "fold" and cfg.get("folds"):
            flags.append("--fold $k")
            continue
        if key in _NOT_RECIPE or key not in base or value == base[key]:
            continue
        flag = _FLAG.get(key, f"--{key.replace('_', '-')}")
        if key == "augment":
            flags += [] if value else ["--no-augment"]
        elif key == "tensorboard" and value is not None:
            flags.append("--tensorboard" if value else "--no-tensorboard")
        elif key in ("lr_factor", "lr_patience", "split_seed") or value is None:
            raise ValueError(f"the run's {key}={value!r} differs from the recipe's {base[key]!r} and no flag of "
                             f"brats-keras train sets it: no command reproduces this run")
        elif isinstance(value, bool):
            flags += [flag] if value else []
        else:
            flags.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    split = f"--split-file {split_file} " if split_file and not cfg.get("folds") else ""
    init = [f"--init-from {init_from}"] if init_from else []
    return (f"brats-keras train --data {data} --recipe pretrained \\\n"
            f"    {split}--out {out}" + "".join(" " + f for f in flags + init))


def _rule_text(pp: dict) -> str:
    """How the folds' post-processing choice was made (``choose_postprocessing``'s rule, from its result)."""
    gain = pp.get("min_gain") or 0.001
    if pp.get("confidence"):
        return (f"A setting was taken only if it raised a mean Dice by more than {gain:g} and the lower end of the "
                f"{pp['confidence']:.0%} paired bootstrap interval of its per-case gain was not below 0.")
    return (f"This choice was made by the mean-only rule (a rise of a mean Dice by more than {gain:g}); "
            "`crossval` now also asks for a paired test over cases, which a gain that helps some cases and "
            "hurts about as many does not pass.")


def card_markdown(card: dict, history: dict | None = None) -> str:
    """The human-readable model card (``MODEL_CARD.md``) of a machine-readable one (``model_card.json``).

    Args:
        card: the machine-readable card written by ``scripts/export_pretrained.py`` (a fold ensemble's goes to
            :func:`ensemble_card_markdown`).
        history: the comparison rows of earlier runs (default: :func:`read_history`).
    """
    if card.get("kind") == "fold ensemble":
        return ensemble_card_markdown(card, history)
    history = read_history() if history is None else history
    targets = "\n".join(_row(r) for r in history["against_targets"])
    earlier = "\n".join(_row(r) for r in history["earlier_runs"])
    goal = _row({"run": "target", **history["target"]})
    t, v, a = card["training"], card["validation"], card["architecture"]
    rows = "\n".join(f"| {cid} | {cells(s)} |" for cid, s in sorted(v["cases"].items()))
    p = card["preprocessing"]
    train_mean = card.get("training_cases")
    train_text = (f"\nScored the same way on its own 19 training cases it reaches only "
                  f"{cells(train_mean, hd95=False).replace(' | ', ' / ')}: it does not fit whole cases of its training data"
                  f" either, which points at the 2 mm resolution and the model's size as much as at the data."
                  if train_mean else "")
    this_row = f"| batch norm, poly schedule, rotation/zoom (this model) | {cells(v['mean'])} |"
    final = " / ".join(f"{t['final_train_dice'][r]:.2f}" for r in ("WT", "TC", "ET"))
    worst_et = min(v["cases"], key=lambda cid: v["cases"][cid]["ET"]["dice"])
    last = v.get("last_checkpoint")
    last_row = (f"\n| the same run's last checkpoint ({t['steps']:,} steps, not chosen on validation) | "
                f"{cells(last['mean'])} |" if last else "")
    return f"""# Model card: brats-keras pretrained 3D U-Net (BraTS regions)

**Not a medical device.** A research model trained on 19 cases; do not use it for diagnosis or treatment.

## What it is
- `{card['model_file']}` ({card['size_mb']} MB, no optimizer state): `{a['name']}` with {a['base_filters']} base
  filters, depth {a['depth']}, {a['norm']} normalisation, {a['parameters']:,} parameters, three sigmoid outputs
  (WT, TC, ET), decoded to labels NCR / ED / ET.
- Input: {', '.join(p['modalities'])} (channels in that order), each z-scored over its brain voxels, the brain's
  bounding box, down-sampled to 2 mm (2x2x2 block means); prediction slides {p['patch_size']}^3 windows
  (at 2 mm) over the brain and up-samples the probabilities to 1 mm.
- Load it with `brats_keras.checkpoint.load_pretrained()`; `brats-keras predict --input CASE --output DIR`
  uses it when no `--model` is given.

## Data and split
Trained on the 19 training cases of `../shared/data/brats-real` (BraTS 2018 training cases in
2018-2021 naming and BraTS2021_00006), validated on 4 held-out cases that span small and large
tumors: {', '.join(card['data']['split']['val'])}. Training cases: {', '.join(card['data']['split']['train'])}.

## Training
Loss {t['loss']}, {t['patch_size']}^3 patches (2 mm), batch {t['batch_size']}, {t['optimizer']},
{t['augmentation']} augmentation, {t.get('patches', PATCHES_TEXT)}. {t['epochs_run']} epochs of
{t['steps_per_epoch']} steps ({t['steps']} steps, {t['minutes']:.0f} minutes) on {t['hardware']}; the shipped
checkpoint is the one with the best whole-case validation Dice (epoch {t['checkpoint_epoch']},
{t['checkpoint_steps']} steps).

Reproduce (the same command runs on the full BraTS data):

```bash
python data_prep/convert.py --input ../shared/data/brats-real --output data/real_2mm \\
    --modalities flair,t1,t1ce,t2 --crop brain --scale zscore --downsample 2
{t['command']}
python scripts/export_pretrained.py --run runs/pretrained --real ../shared/data/brats-real --train-minutes {t['minutes']:.0f}
```

## Validation (whole cases in their original 1 mm geometry; Dice / HD95 in mm)

| case | WT | TC | ET |
| --- | --- | --- | --- |
{rows}
| **mean** | {cells(v['mean'], bold=True)} |
| mean with mirroring TTA | {cells(v['tta_mean'])} |

Prediction takes {v['seconds_per_case']:.1f} s per case without TTA and {v['tta_seconds_per_case']:.1f} s with it on
the training machine's CPU. For comparison, the report's model reached a mean Dice of 0.518.

## Against the targets
| | WT | TC | ET |
| --- | --- | --- | --- |
{targets}
| this model | {cells(v['mean'], hd95=False)} |
| this model with TTA | {cells(v['tta_mean'], hd95=False)} |
{goal}

What limits it: 19 training cases (training Dice ends at {final} while whole-case validation
mean Dice over the second half of training stays between {t['late_val_range'][0]:.2f} and {t['late_val_range'][1]:.2f}, so more data would help most; the
weakest case is {worst_et} with ET {v['cases'][worst_et]['ET']['dice']:.2f}), the 2 mm working resolution (caps ET near
0.86 even for a perfect 2 mm mask), and a 2-core CPU (a 128^3 patch at 1 mm costs over 3 s per step,
so a full-resolution nnU-Net-style model for 1,000 epochs is out of reach here). Trained on all
BraTS 2021 cases with the same command, or fine-tuned from these weights, it should do far better.{train_text}

## Earlier runs on the same split (whole-case validation, no TTA; Dice, HD95 in mm)
| run | WT | TC | ET |
| --- | --- | --- | --- |
{earlier}
{this_row}{last_row}

Instance norm normalises every window by its own statistics, so a window far from the tumor gets its
contrast stretched and the model paints edema there (WT HD95 39.6 mm on Brats18_CBICA_AQN_1); batch
norm uses statistics learned in training and removes those islands (compare the HD95 above).

## Limits
- 19 training cases: expect lower scores on scanners, protocols and tumor types they do not cover.
- 2 mm working resolution: thin enhancing rims and tiny lesions lose detail.
- Only 4 validation cases: differences under 0.05 on TC and ET are noise, and the checkpoint was chosen on
  these 4 cases, so its scores are optimistic (the run's last checkpoint is in the table above).
- Not a medical device; not validated for clinical use.
"""


def optimizer_text(cfg):
    if cfg.get("lr_schedule", "plateau") == "poly":
        budget = f" or the {cfg['time_limit']:g}-minute time limit, whichever is further along" if cfg.get("time_limit") else ""
        return f"Adam lr {cfg['lr']} with polynomial decay (power 0.9) over {cfg['epochs']} epochs{budget}"
    return f"Adam lr {cfg['lr']} halved on a {cfg['lr_patience']}-epoch validation-loss plateau"


def loss_text(cfg):
    """The run's loss, and its deep supervision when it had some (``--deep-supervision N``)."""
    n = int(cfg.get("deep_supervision") or 0)
    if not n:
        return cfg["loss"]
    total = 2 ** (n + 1) - 1  # the weights 1, 1/2, 1/4, ... normalised: 2^n / total, ..., 1 / total
    levels = " and ".join(f"1/{2 ** k}" for k in range(1, n + 1))
    weights = ", ".join(f"{2 ** (n - k)}/{total}" for k in range(n + 1))
    outputs = "output" if n == 1 else "outputs"
    return (f"{cfg['loss']} on the main output and on {n} deep-supervision {outputs} (decoder levels at {levels} "
            f"resolution, up-sampled; weights {weights}; --deep-supervision {n})")


#: how the cards said a run's tumor-centred patches were drawn before runs could choose it
PATCHES_TEXT = "a third of the patches centred on tumor"


def patches_text(cfg) -> str:
    """How a run's patches were drawn (its config's ``foreground_ratio`` and ``foreground_sampling``), for a
    card: "a third of the patches centred on tumor", then how the centre's class was drawn where it was not
    the default."""
    ratio = cfg.get("foreground_ratio", 0.33)
    share = "a third of the patches" if abs(ratio - 1 / 3) < 0.01 else f"{ratio:.0%} of the patches"
    text = f"{share} centred on tumor"
    if cfg.get("foreground_sampling", "voxels") == "classes":
        text += " (a tumor class of the case first, each alike, then a voxel of it: --foreground-sampling classes)"
    return text


def augmentation_text(cfg):
    text = "flips, intensity and gamma"
    if cfg.get("intensity_augment") == "strong":
        text = ("flips, per-channel noise, blur, brightness, contrast, simulated low resolution and gamma "
                "(--intensity-augment strong)")
    if cfg.get("spatial_augment"):
        p = cfg["spatial_augment"]
        text += f", rotation up to 15 degrees and zoom 0.85-1.25 (each with probability {p})"
    return text


# ----------------------------------------------------------------------------- the fold ensemble's card
#: the largest Dice difference between the float16 fold files and the float32 table that the card calls no change
FLOAT16_DICE_TOLERANCE = 0.005


def _dice_row(name: str, scores: dict, hd95: bool = False) -> str:
    def cell(r):
        s = scores[r]
        return f"{s['dice']:.3f}" + (f" / {s['hd95']:.1f}" if hd95 else "") if isinstance(s, dict) else f"{s:.3f}"
    return f"| {name} | " + " | ".join(cell(r) for r in REGIONS) + " |"


def _training_paragraph(t: dict, who: str, at: str, checkpoint: str) -> str:
    """One recipe's training, as the ensemble card's Training section says it."""
    steps = t.get("steps_range") or [t["steps_per_fold"]]
    steps = f"{steps[0]:,}" if len(steps) == 1 else f"{steps[0]:,} to {steps[-1]:,}"
    return (f"{who}: loss {t['loss']}, {t['patch_size']}^3 patches{at}, batch {t['batch_size']}, {t['optimizer']},\n"
            f"{t['augmentation']} augmentation, {t.get('patches', PATCHES_TEXT)}, {steps} steps ({checkpoint}),\n"
            f"about {t['minutes_per_fold']:.0f} minutes on {t['hardware']}.")



def _undersegmentation_text(u: dict | None, before: dict | None = None) -> str:
    """The Limits bullet on under-segmentation from the card's ``undersegmentation`` (scripts/undersegmentation.py):
    recall against precision, where the missed tumor lies, and what recall follows and what it does not; with
    ``before`` (the stage-1 ensemble's, for a two-stage recipe) how the second stage moved recall and precision."""
    if not u:
        return ""
    moved = ""
    if before:
        moved = (" Stage 1 alone had recall / precision "
                 + ", ".join(f"{r} {before[r]['recall']:.3f} / {before[r]['precision']:.3f}" for r in REGIONS)
                 + "; the second stage moved them by "
                 + ", ".join(f"{r} {u[r]['recall'] - before[r]['recall']:+.3f} / "
                             f"{u[r]['precision'] - before[r]['precision']:+.3f}" for r in REGIONS) + ".")
    wt = u["WT"]
    rho = {k: v for k, v in wt["spearman"].items()}
    strongest = max((k for k in rho if k.endswith("contrast")), key=lambda k: rho[k][0])
    return ("\n- Under-segmentation: out-of-fold recall is below precision in every region ("
            + ", ".join(f"{r} {u[r]['recall']:.3f} / {u[r]['precision']:.3f}" for r in REGIONS)
            + f"). Of the WT voxels it misses, {wt['missed_within_2mm']:.0%} lie within 2 mm of its predicted tumor and "
            f"{wt['missed_sure']:.0%} had a probability under 0.1, so a lower threshold does not bring them back "
            f"(WT Dice {wt['dice_at']['0.4']:.4f} at 0.4 against {wt['dice_at']['0.5']:.4f} at 0.5). WT recall does not "
            f"follow the tumor's size (Spearman rho {rho['true volume'][0]:+.2f}) or its share of the brain "
            f"({rho['tumor share of the brain'][0]:+.2f}: the brain z-score is not skewed by a large lesion); it "
            f"follows the lesion's {strongest.split()[0].upper()} contrast (rho {rho[strongest][0]:+.2f}, "
            f"p {rho[strongest][1]:.3f}): the faint outer edge of the edema is left out (`scripts/undersegmentation.py`)."
            + moved)

def ensemble_card_markdown(card: dict, history: dict | None = None) -> str:
    """The model card (``MODEL_CARD.md``) of a shipped fold ensemble (``model_card.json`` with ``"kind": "fold
    ensemble"``, written by ``scripts/export_pretrained.py --folds``): the cross-validated estimate first.

    Args:
        card: the machine-readable card.
        history: the comparison rows (default: :func:`read_history`); its ``"cv_attempts"`` rows are the recipes
            tried, each with its cross-validated mean Dice.
    """
    from .crossval import crossval_markdown

    history = read_history() if history is None else history
    cv, post, pp = card["crossval"], card["crossval_postprocessed"], card["postprocessing"]
    a, t, files, check = card["architecture"], card["training"], card["model_files"], card["check"]
    recipes = card.get("recipes") or [t]
    n_models, n_recipes, n_cases = len(files), len(recipes), len(cv["cases"])
    n_folds = len({int(f["fold"]) for f in files})
    dtype = card.get("ensemble", {}).get("weights_dtype", "float16")
    commands = card["commands"]
    headline = crossval_markdown(cv, pp, command=None, postprocessed=post).replace(
        "## Cross-validated estimate", "## Headline: the cross-validated estimate", 1)
    attempts = "\n".join(_row(r) for r in history.get("cv_attempts", []))
    target = history.get("cv_target", {"WT": "0.88", "TC": "0.80", "ET": "0.76"})
    floor = history.get("external_floor", {"WT": "0.86", "TC": "0.76", "ET": "0.74"})
    before_external = history.get("external_previous")
    external = f"\n{_row(before_external)}" if before_external else ""
    size = sum(f["size_mb"] for f in files)
    p = card["preprocessing"]
    outputs = ("three sigmoid outputs (WT, TC, ET), decoded to labels NCR / ED / ET" if a.get("output") != "softmax"
               else "four softmax outputs (background, NCR, ED, ET)")
    factor = int(p.get("downsample") or 1)
    at = f" (at {factor} mm)" if factor > 1 else ""
    resolution = (f"down-sampled to {factor} mm ({factor}x{factor}x{factor} block means)" if factor > 1
                  else "at 1 mm")
    back = "up-samples them to 1 mm and " if factor > 1 else ""
    scaled = {"zscore": "z-scored over its brain voxels", "minmax": "min-max scaled to 0-1"}.get(
        p.get("scale"), f"scaled ({p.get('scale')})")
    if not attempts:
        attempts = "| (none recorded yet) | - | - | - |"
    if cv.get("checkpoint", "last") == "last":
        checkpoint = "last checkpoint, none chosen on validation"
    else:  # chosen on the very cases the headline scores
        checkpoint = (f"the {cv['checkpoint']} checkpoint by validation Dice, chosen on the cases the headline "
                      "scores, which makes it lean optimistic")
    folds_how = ("Folds stratified by tumor size" if card["data"].get("stratified_by", "tumor size")
                 else "Folds drawn at random (too few cases to stratify by tumor size)")
    moved = check["max_dice_difference"]
    stored = {"int8": "int8", "float32": "float32"}.get(dtype, "float16")
    float16 = (f"{stored[0].upper()}{stored[1:]} storage does not move the scores: fold models in {stored} with the "
               f"stored post-processing scored {len(check['cases'])} of the cases above within {moved:.4f} Dice of "
               "the float32 table." if moved <= FLOAT16_DICE_TOLERANCE else
               f"Fold models in {stored} with the stored post-processing scored {len(check['cases'])} of the cases "
               f"above up to {moved:.4f} Dice away from the float32 table.")
    weights = {"int8": "kernels stored in int8 with a scale per channel, other weights in float16",
               "float32": "weights stored in float32"}.get(dtype, "weights stored in float16")
    letters = sorted({f["file"][len(f"fold-{f['fold']}"):-len(".keras")] for f in files})
    one_fold = "one model" if n_recipes == 1 else f"the {n_recipes} models of one fold"
    if n_recipes == 1:
        title = f"{n_folds}-fold ensemble"
        scored_by = "the one fold model that never saw it, so these numbers are what\nthe recipe gives"
        this = "this recipe"
        file_list = f"`fold-0.keras` ... `fold-{n_folds - 1}.keras`"
        training = _training_paragraph(t, "Each fold", at, checkpoint)
    else:
        title = f"{n_recipes} recipes x {n_folds}-fold ensemble"
        scored_by = (f"the {n_recipes} fold models (one per recipe) that never saw it, their probabilities averaged, "
                     "so these numbers are what\nthe ensemble gives")
        this = f"the {n_recipes} recipes combined"
        headline = headline.replace("by the fold model that did not train on it", "by the mean of the probabilities "
                                    f"of the {n_recipes} fold models (one per recipe) that did not train on it", 1)
        file_list = (f"`fold-0{letters[0]}.keras` ... `fold-{n_folds - 1}{letters[-1]}.keras` (the letter is the "
                     "recipe)")
        training = "\n\n".join(
            _training_paragraph(r, f"Recipe {'abcdefghij'[i]}, each fold", at, checkpoint)
            + f" Alone, {n_folds}-fold cross-validated: mean Dice "
            + " / ".join(f"{r['crossval_mean'][k]['dice']:.3f}" for k in REGIONS) + "."
            for i, r in enumerate(recipes))
    c = card.get("resolution_ceiling")
    ceiling = (f" (the true label maps taken to {factor} mm and back score mean Dice "
               f"{' / '.join(f'{c[r]:.3f}' for r in REGIONS)}: the most any {factor} mm model can reach)" if c else "")
    g, on_grid = card.get("grid_dice"), ""
    if g and factor != 1:
        fine = {r: card["crossval"]["mean"][r]["dice"] for r in REGIONS}
        gains = " / ".join(f"{g[r] - fine[r]:+.3f}" for r in REGIONS)
        head = (f"\n- Scored at {factor} mm (the out-of-fold predictions and the true label maps both taken to "
                f"{factor} mm), the recipe reaches mean Dice {' / '.join(f'{g[r]:.3f}' for r in REGIONS)}")
        # the conclusion follows the numbers: "little" while the grid explains under a quarter of every region's error
        if all(0 <= g[r] - fine[r] < 0.25 * (1 - fine[r]) for r in REGIONS):
            on_grid = (f"{head}, only {gains} above its 1 mm scores: most of its error is tumor missed or taken for "
                       "another class, not detail lost to the grid, so a finer second stage alone would gain little.")
        else:
            on_grid = (f"{head}, {gains} against its 1 mm scores: the part of its error that is detail lost to the "
                       "grid, what a finer second stage could win back at most.")
    e, dim_et = card.get("et_contrast"), ""
    if e and e.get("low"):
        zs = [e["cases"][c] for c in e["low"]]
        rest = [z for c, z in e["cases"].items() if c not in e["low"]]
        dim_et = (f"\n- Enhancing tumor that is not bright in T1ce: in {len(e['low'])} of the {len(e['cases'])} cases "
                  f"with ET the labelled ET lies less than {e['threshold']:g} standard deviation above the brain's mean "
                  f"T1ce (`brats_keras.evaluation.label_contrast`: z {min(zs):.2f} to {max(zs):.2f}"
                  + (f", against {min(rest):.2f} and above in the others" if rest else "")
                  + f"); the out-of-fold ET Dice there is {e['et_dice_low']:.2f}"
                  + (f", against {e['et_dice_rest']:.2f} on the other {len(rest)}." if rest else "."))
    stage1 = card.get("stage1")
    under = _undersegmentation_text(card.get("undersegmentation"), (stage1 or {}).get("undersegmentation"))
    if stage1:  # a two-stage recipe: stage 1 (an ensemble exported before), then each fold continued from its file
        first = stage1["training"]
        training = (_training_paragraph(first, "Stage 1, each fold", at,
                                        f"{stage1.get('checkpoint') or 'last'} checkpoint")
                    + " Cross-validated alone: mean Dice "
                    + " / ".join(f"{stage1['crossval_mean'][r]['dice']:.3f}" for r in REGIONS) + ".\n\n"
                    + _training_paragraph(t, "Stage 2, each fold starting from its stage-1 model (`--init-from`; "
                                          "the sha256 of each start file is in model_card.json)", at, checkpoint))
    return f"""# Model card: brats-keras pretrained 3D U-Net, {title} (BraTS regions)

**Not a medical device.** A research model trained on {n_cases} real BraTS cases; do not use it for diagnosis or
treatment.

{headline.rstrip()}

Each of the {n_cases} cases above was segmented by {scored_by} on patients it has not seen. The shipped ensemble averages all {n_models} fold models; its own
score on these cases is not an estimate (each case is in the training data of {n_models - n_recipes} of them). Ensembling
usually adds a little on new patients. The post-processing rows lean optimistic by the gains the choice measured on
these same cases (mean Dice {' / '.join(f"{pp['dice_before'][r]:.3f}" for r in REGIONS)} before, \
{' / '.join(f"{pp['dice_after'][r]:.3f}" for r in REGIONS)} after).
{_rule_text(pp)}

## Against the targets (mean Dice over cases)
| | WT | TC | ET |
| --- | --- | --- | --- |
{_row({"run": "target (cross-validated)", **target})}
{_row({"run": "maintainers' floor on their own cases", **floor})}{external}
{_dice_row(f"{this}, {n_folds}-fold cross-validated, before post-processing", cv["mean"])}
{_dice_row("the same with the chosen post-processing", post["mean"])}

## What was tried (each a {n_folds}-fold cross-validation on the same {n_cases} cases; mean Dice, before post-processing)
| recipe | WT | TC | ET |
| --- | --- | --- | --- |
{attempts}

## What it is
- {n_models} files {file_list}, {size:.1f} MB in all ({weights}, no
  optimizer state; they load into float32 models). Each: `{a['name']}` with {a['base_filters']} base filters,
  depth {a['depth']}, {a['norm']} normalisation, {a['parameters']:,} parameters, {outputs}.
- Input: {', '.join(p['modalities'])} (channels in that order), each {scaled}, the brain's bounding box,
  {resolution}; prediction slides {p['patch_size']}^3 windows{at} over the brain, averages
  the {n_models} models' probabilities, {back}applies the post-processing stored in the files: `{json.dumps({k: v for k, v in pp['postprocess'].items() if k != 'chosen_on'})}`.
- `brats-keras predict --input CASE --output DIR` uses the ensemble when no `--model` is given
  ({check['ensemble_seconds_per_case']:.1f} s per case on {t['hardware'].split(',')[0]}, {one_fold}
  {check['single_seconds_per_case']:.1f} s); `brats_keras.checkpoint.load_pretrained()` gives fold 0, one network to
  fine-tune.
- {float16}

## Training
{training}
{folds_how} ({card['data']['folds_text']}).

Reproduce:

```bash
{commands.rstrip()}
```

## Limits
- {n_cases} training cases from a handful of institutions: expect lower scores on scanners, protocols and tumor
  types they do not cover (the maintainers' 21 further cases come from one institution).
- {factor} mm working resolution: thin enhancing rims and tiny lesions lose detail{ceiling}.{on_grid}{dim_et}{under}
- Not a medical device; not validated for clinical use.
"""
