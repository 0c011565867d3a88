"""`nas targets`: the devices nas can search for, and every spec behind them."""

from __future__ import annotations

import argparse

from nas.commands._common import add_json_flag, emit, list_or_show

HELP = "list deployment targets, or show one target's specs with their sources"
DESCRIPTION = """List the deployment targets (one TOML file per device in targets/), or show one in full.

  nas targets                     name, device, execution providers, precision, memory, latency source
  nas targets show pixel8         every spec number with its unit and source, and the published-measurement fit
  nas targets show pixel8 --json
  nas targets fit                 refit the devices' rooflines to latency_models/published.toml; writes the fit
  nas targets fit --data F --out G --dry-run

A described device whose analytic model was fitted to published measurements (latency_models/published.toml,
fitted by `nas targets fit`) says "analytic, fitted to N published measurements (runtimes)" with its
leave-one-model-out error; the others say "analytic, uncalibrated". Your own calibration wins over both.

`nas targets fit` prints, per device and compute unit: rows, architectures and runtimes behind the fit; the fitted
parameters beside the spec-sheet defaults; leave-one-model-out (LOO) median absolute error of decode and prefill
tokens/s beside the same figure for the spec-sheet defaults; per-runtime fits where a runtime alone has enough
rows; and every row whose fitted or LOO prediction is off by more than 30%. A malformed data file is refused with
file:line and the field (exit 2); the fit file is written only after every fit succeeded, atomically, so a
failure leaves the previous one in place.
"""

_HOST_HINT = "measured here after `nas calibrate --target host-cpu`"


UNEXPLAINED_PCT = 30.0  # `nas targets fit` lists every row a fit misses by more than this


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("words", nargs="*", metavar="show NAME | fit",
                        help="`show NAME` to print one target in full; `fit` to refit the published measurements")
    parser.add_argument("--data", metavar="TOML", help="fit: the measurement file (default: the shipped "
                                                       "latency_models/published.toml)")
    parser.add_argument("--out", metavar="PATH", help="fit: the fit file to write (default: the shipped "
                                                      "latency_models/published_fit.json)")
    parser.add_argument("--dry-run", action="store_true", help="fit: print the fit, write nothing")
    add_json_flag(parser)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.3g} GiB"


def _bandwidth(target) -> str:
    if target.mem_bandwidth_bytes_per_s is None:
        return "probed" if target.measured_here else "-"
    return f"{target.mem_bandwidth_bytes_per_s / 1e9:.3g} GB/s"


def _flops(value: float, precision: str) -> str:
    unit = "OP/s" if precision.startswith("int") else "FLOP/s"
    return f"{value / 1e12:.3g} T{unit}" if value >= 1e12 else f"{value / 1e9:.4g} G{unit}"


def _latency(target) -> tuple[str, str | None]:
    from nas.latency.registry import ANALYTIC, latency_source

    source = latency_source(target)
    hint = _HOST_HINT if target.measured_here and source == ANALYTIC else None
    return source, hint


def _fits(target) -> dict:
    from nas.latency.published import target_fits

    return {} if target.measured_here else target_fits(target.name)


def _fit_line(unit: str, entry: dict) -> str:
    from nas.latency.published import loo_text

    if entry.get("fitted"):
        return (f"{entry['label']} [{unit}]; leave-one-model-out {loo_text(entry)}; "
                f"spec-sheet defaults {loo_text(entry, 'baseline')}")
    return f"{unit}: {entry.get('n_rows', 0)} published rows, not fitted ({entry.get('reason')})"


def _fit_lines(target, fits: dict) -> list[str]:
    """What `nas targets show` prints about the published-measurement fit of one target."""
    from nas.latency.published import PARAM_NAMES, loo_text

    lines = []
    for unit, e in fits.items():
        lines.append(f"    {_fit_line(unit, e)}")
        if e.get("fitted"):
            lines.append(f"      {'parameter':<24}{'fitted':>10}{'spec sheet':>12}")
            for k in PARAM_NAMES:
                lines.append(f"      {k:<24}{e['params'][k]:>10.4g}{e['spec_params'][k]:>12.4g}")
            for runtime, sub in e.get("per_runtime", {}).items():
                params = ", ".join(f"{k} {sub['params'][k]:.3g}" for k in PARAM_NAMES)
                lines.append(f"      runtime {runtime} alone ({sub['n_rows']} rows): {params}; "
                             f"leave-one-model-out {loo_text(sub)}")
        lines.append(f"      rows (published.toml line: model, format, runtime, phase, published tok/s -> "
                     f"{'fitted / left-out' if e.get('fitted') else 'spec-sheet'} prediction):")
        for r in e.get("rows", []) + e.get("proxy_rows", []):
            pred = (f"{r['fitted_tok_s']:.4g} / {r['loo_tok_s']:.4g}" if r.get("loo_tok_s") is not None
                    else f"{r['fitted_tok_s']:.4g}" if r.get("fitted_tok_s") is not None else f"{r['spec_tok_s']:.4g}")
            proxy = " [proxy, not fitted]" if r.get("proxy") else ""
            lines.append(f"        {r['line']:>4}: {r['model']}, {r['quant']}, {r['runtime']}, {r['phase']}, "
                         f"{r['published_tok_s']:.4g} -> {pred}{proxy}")
    return lines


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def _list(args) -> int:
    from nas.targets import list_targets

    data, rows = [], []
    for t in list_targets():
        source, hint = _latency(t)
        data.append({
            "name": t.name, "display_name": t.display_name, "execution_providers": list(t.execution_providers),
            "default_precision": t.default_precision, "precisions": list(t.precisions), "threads": t.threads,
            "ram_bytes": t.ram_bytes, "memory_budget_bytes": t.memory_budget_bytes,
            "mem_bandwidth_bytes_per_s": t.mem_bandwidth_bytes_per_s, "latency_source": source,
            "latency_hint": hint, "measured_here": t.measured_here,
        })
        eps = ", ".join(ep.removesuffix("ExecutionProvider") for ep in t.execution_providers)
        rows.append([t.name, t.display_name, eps, t.default_precision, _gib(t.ram_bytes), _bandwidth(t),
                     source + (f" ({hint})" if hint else "")])
    text = _table(rows, ["NAME", "DEVICE", "EXECUTION PROVIDERS", "PRECISION", "RAM", "BANDWIDTH", "LATENCY"])
    fit_lines = []
    for t, d in zip(list_targets(), data):
        fits = _fits(t)
        d["published_fit"] = {unit: {k: e.get(k) for k in ("fitted", "label", "n_rows", "runtimes", "loo", "baseline")}
                              for unit, e in fits.items()}
        fit_lines += [f"  {t.name}: {_fit_line(unit, e)}" for unit, e in fits.items()]
    if fit_lines:
        text += "\n\nPublished measurements (latency_models/published.toml):\n" + "\n".join(fit_lines)
    text += "\n\nExecution providers are ONNX Runtime's (…ExecutionProvider), preferred first. " \
            "`nas targets show NAME` prints every spec with its source."
    emit(args, data, text)
    return 0


def _show(args, name: str) -> int:
    from nas.targets import load_target

    t = load_target(name)
    source, hint = _latency(t)
    data = t.to_dict()
    data["latency_source"] = source
    data["latency_hint"] = hint
    lines = [
        f"{t.name}: {t.display_name}",
        f"  {t.description}",
        f"  file:                {t.path}",
        f"  execution providers: {', '.join(t.execution_providers)}  (preferred first)",
        f"  default precision:   {t.default_precision}   (can deploy: {', '.join(t.precisions)})",
        f"  threads:             {t.threads}",
        f"  RAM:                 {_gib(t.ram_bytes)}   model budget: {_gib(t.memory_budget_bytes)}",
        f"  memory bandwidth:    {_bandwidth(t)}",
        f"  latency:             {source}" + (f" ({hint})" if hint else ""),
        "  compute by precision:",
    ]
    for p in t.precisions:
        peak = _flops(t.peak_flops[p], p) if p in t.peak_flops else ("probed" if t.measured_here else "-")
        lines.append(f"    {p:<5} on {t.compute_unit[p]}: {peak}")
    lines.append("  specs:")
    for key, spec in t.specs.items():
        lines.append(f"    {key}: {spec.value:g} {spec.unit}")
        lines.append(f"        source: {spec.source}")
    fits = _fits(t)
    data["published_fit"] = fits
    if fits:
        lines.append("  published measurements (latency_models/published.toml, fitted by `nas targets fit`):")
        lines += _fit_lines(t, fits)
    elif not t.measured_here:
        lines.append("  published measurements: none in latency_models/published.toml")
    emit(args, data, "\n".join(lines))
    return 0


def _fit(args) -> int:
    from pathlib import Path

    from nas.core.errors import NasUserError
    from nas.latency import published

    if args.out and not args.dry_run and Path(args.out).is_dir():  # refused before fitting, not after
        raise NasUserError(f"cannot write the published-measurement fit to {args.out}: it is a folder, not a file")
    result = published.fit_published(published.load_published(args.data))
    lines = fit_report(result)
    if not args.dry_run:
        lines.append(f"wrote {published.write_fit(result, args.out)}")
    emit(args, result, "\n".join(lines))
    return 0


def fit_report(result: dict) -> list[str]:
    """`nas targets fit`'s text (see DESCRIPTION)."""
    from nas.latency.published import HUBER_K, MIN_MODELS, MIN_ROWS, SIGMA

    lines = [f"published measurements: {result['data_file']} (sha256 {result['data_sha256'][:12]})",
             (f"fit: Huber on log time (sigma {SIGMA}, k {HUBER_K}), log-normal prior at the spec-sheet defaults; "
              f"a group is fitted with >= {MIN_ROWS} rows of >= {MIN_MODELS} architectures"), ""]
    for target, units in result["targets"].items():
        for unit, e in units.items():
            lines.append(f"{target} ({unit}): {e.get('n_rows', 0)} rows, {len(e.get('models', []))} architectures, "
                         f"runtimes: {', '.join(e.get('runtimes', [])) or '-'}")
            lines += _fit_summary(e) + _unexplained(e) + [""]
    return lines


def _fit_summary(e: dict) -> list[str]:
    from nas.latency.published import PARAM_NAMES, loo_text

    if not e.get("fitted"):
        return ([f"  not fitted ({e.get('reason')}); stays 'analytic, uncalibrated'"]
                + ([f"  spec-sheet defaults vs these rows: {loo_text(e, 'baseline')}"] if e.get("baseline") else []))
    lines = [f"  label: {e['label']}", "  parameter               fitted      spec sheet"]
    lines += [f"  {k:<22s} {e['params'][k]:>9.4g}   {e['spec_params'][k]:>9.4g}" for k in PARAM_NAMES]
    lines += [f"  LOO (leave one architecture out): {loo_text(e)}",
              f"  spec-sheet defaults, same rows:   {loo_text(e, 'baseline')}"]
    for runtime, sub in e.get("per_runtime", {}).items():
        params = ", ".join(f"{short} {sub['params'][k]:.3g}" for k, short in zip(
            PARAM_NAMES, ("compute eff", "bandwidth eff", "ms/layer", "ms/run")))
        lines.append(f"  runtime {runtime}: {sub['n_rows']} rows; {params}; LOO {loo_text(sub)}")
    return lines


def _unexplained(e: dict) -> list[str]:
    """Rows whose fitted or left-out prediction misses the published figure by more than UNEXPLAINED_PCT."""
    def pct(value, reference) -> str:
        return "-" if value is None else f"{(value / reference - 1) * 100:+.0f}%"

    return [f"  off by >{UNEXPLAINED_PCT:.0f}%: line {r['line']} {r['model']} {r['quant']} {r['runtime']} "
            f"{r['phase']}{' (proxy)' if r['proxy'] else ''}: published {r['published_tok_s']:.4g} tok/s, "
            f"fitted {pct(r['fitted_tok_s'], r['published_tok_s'])}, LOO {pct(r['loo_tok_s'], r['published_tok_s'])}, "
            f"spec {pct(r['spec_tok_s'], r['published_tok_s'])}"
            for r in e.get("rows", []) + e.get("proxy_rows", [])
            if any(v is not None and abs(v / r["published_tok_s"] - 1) * 100 > UNEXPLAINED_PCT
                   for v in (r["fitted_tok_s"], r["loo_tok_s"]))]


def run(args: argparse.Namespace) -> int:
    if args.words == ["fit"]:
        return _fit(args)
    return list_or_show(args, "targets", "pixel8", _list, _show)
