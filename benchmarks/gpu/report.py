"""The check's figures against the issue's targets, as JSON and as the short table printed last."""

from __future__ import annotations

DALI_TARGET, TRAIN_TARGET, WAIT_TARGET = 20_000, 15_000, 0.05

# (figure, label, target, direction): the targets of the pipeline and trainer issues.
TARGETS = (
    ("dali_images_per_s", "DALI pipeline images/s", DALI_TARGET, "min"),
    ("dali_all_threads_images_per_s", "  same, a thread per core", None, None),
    ("reference_images_per_s", "reference loader images/s", None, None),
    ("train_bare_images_per_s", "training bare (data on device) images/s", TRAIN_TARGET, "min"),
    ("train_lever_before_images_per_s", "  same, the trainer before the levers", None, None),
    ("train_bare_compiled_images_per_s", "  same, torch.compile", None, None),
    ("train_fed_images_per_s", "training fed by DALI images/s", TRAIN_TARGET, "min"),
    ("data_wait_fraction", "data wait, fed by DALI (GPU drained)", WAIT_TARGET, "max"),
    ("next_fraction_as_trainer", "  time in next() as the trainer runs", None, None),
    ("train_fed_reference_images_per_s", "training fed by reference images/s", None, None),
    ("trainer_loop_images_per_s", "trainer.run.train.Trainer loop images/s", None, None),
    ("trainer_loop_data_wait_fraction", "  its data-wait meter", None, None),
    ("gpu_decode_images_per_s", "torchvision decode_jpeg images/s", None, None),
)


def verdicts(figures: dict) -> dict:
    out = {}
    for name, _, target, direction in TARGETS:
        value = figures.get(name)
        if target is None or value is None:
            continue
        met = value >= target if direction == "min" else value <= target
        out[name] = {"target": target, "direction": direction, "met": bool(met)}
    return out


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 1:
        return f"{value:.1%}"
    return f"{value:,.0f}"


def table(report: dict) -> str:
    figures, targets = report["figures"], report["targets"]
    mode = "DRY RUN (CPU, tiny sizes: not GPU figures)" if report["dry_run"] else "GPU"
    m = report["machine"]
    p = report["plan"]
    lines = [f"GPU check, {mode}: {m.get('gpu_name', 'no GPU')}, torch {m.get('torch')}, "
             f"DALI {m.get('dali') or 'missing'}, {m.get('cpus')} CPUs",
             f"batches: pipelines {p['dali_batch']}, training {p['train_batch']} (model width "
             f"{p['width']}, AMP bf16 {'on' if p['amp'] else 'off'}, channels-last "
             f"{'on' if p['channels_last'] else 'off'}); reference loader {p['ref_workers']} workers, "
             f"DALI {p['dali_threads']} threads"]
    lines.append(f"{'figure':<42} {'value':>10} {'target':>10}  met")
    for name, label, target, direction in TARGETS:
        if target is None and figures.get(name) is None:
            continue  # an optional line with nothing to show
        t = targets.get(name)
        target_s = ("" if direction is None else (">=" if direction == "min" else "<=") + _fmt(target))
        met = "-" if t is None else ("yes" if t["met"] else "NO")
        lines.append(f"{label:<42} {_fmt(figures.get(name)):>10} {target_s:>10}  {met}")
    levers = {k: v for k, v in figures.items() if k.startswith(("train_lever_", "dali_t"))}
    if levers:
        lines.append("levers (images/s; train: over the product's, dali: over dali_images_per_s)")
    for name, value in levers.items():
        base = figures.get("train_lever_product_images_per_s" if name.startswith("train")
                           else "dali_images_per_s")
        ratio = f"{value / base:.2f}x" if base else "-"
        lines.append(f"  {name:<40} {_fmt(value):>10} {ratio:>10}")
    for name, result in report["correctness"].items():
        lines.append(f"{'check: ' + name:<42} {'pass' if result.get('passed') else 'FAIL':>10}")
    bad = [f"{k}: {v['status']} ({v.get('reason', '')[:90]})" for k, v in report["steps"].items()
           if v["status"] != "ok"]
    lines += ["not measured / failed:"] + [f"  {b}" for b in bad] if bad else []
    return "\n".join(lines)
