"""Command-line pieces shared by the tools: error handling, the common training flags and config
resolution."""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional

from ebm_vae.utils.typed_yaml import ConfigError, load_raw
from ebm_vae.utils.vdl import log_writer_class
from ebm_vae.errors import Stopped, UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the tool is, as Ctrl-C raises KeyboardInterrupt (so everything
    that cleans up after Ctrl-C, e.g. atomic writes, cleans up after it too)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def run_tool(body: Callable[[], Optional[int]], after: str = "") -> int:
    """Run a tool's `body` and return its exit code (None: 0). The project's own errors are one
    line on stderr: a `Stopped` one "interrupted: ..." with its exit code, another `UserError`
    "error: ..." with 2. Ctrl-C and SIGTERM outside a handler of their own are the line
    "interrupted (Ctrl-C): `after`" (or "(SIGTERM)") with 130 or 143; SIGTERM is handled so
    from the start (not by Paddle's fatal-error handler). Any other exception is a bug and keeps
    its traceback."""
    main = threading.current_thread() is threading.main_thread()  # signals: main thread only
    old = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        return body() or 0
    except Stopped as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return err.exit_code
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        term = isinstance(err, Terminated)
        print(f"interrupted ({'SIGTERM' if term else 'Ctrl-C'})" + (f": {after}" if after else ""),
              file=sys.stderr)
        return 143 if term else 130
    finally:
        if main:  # None: a handler not set from Python (Paddle's); the default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """--threads, as every tool takes it (see ebm_vae.utils.runtime.configure_cpu)."""
    parser.add_argument("--threads", type=int, help="CPU math threads (default: $EBM_VAE_THREADS, "
                        "else all cores; fewer is faster on a busy machine)")


def add_train_args(parser: argparse.ArgumentParser, example: str = "experiments/mnist_cpu.yaml") -> None:
    """The training CLI contract shared by tools/train.py and tools/complete.py; `example`: the
    experiment file named in the help."""
    parser.add_argument("-c", "--config", help=f"experiment YAML file (e.g. {example}); "
                        "not needed with --resume, which reads the run's saved config.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set train.gamma=2 (repeatable; "
                        "validated like the YAML)")
    parser.add_argument("--out", help="run folder (default: runs/<config name>)")
    parser.add_argument("--data-root", help="folder with the dataset files (sets data.root)")
    parser.add_argument("--max-iters", type=int, help="stop once the run has done N iterations "
                        "in total (resumed ones included), writing a checkpoint and a grid")
    parser.add_argument("--resume", nargs="?", const="", metavar="DIR",
                        help="continue the run in DIR (or in --out) from its last checkpoint")
    parser.add_argument("--device", choices=["cpu", "gpu"], help="override the config's device")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    add_threads_arg(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--visualdl", action="store_true", help="also write the log's scalars "
                        "and the sample grids to RUN/vdl/ for VisualDL (sets train.visualdl; "
                        "needs pip install visualdl)")


def resolve(args: argparse.Namespace, build: Callable[[dict], Any],
            shapes: Optional[Callable[[Any], dict]] = None) -> tuple[Any, Path, bool]:
    """Config, run folder and resume flag from the parsed flags; `build` validates the raw
    mapping (`config_from_dict` of core.config, or `completion_config_from_dict`). With `shapes` (model
    config -> {network: {tensor: shape}}), a resume whose overrides change any parameter's shape
    or the set of parameters is refused, naming the --set keys that do it."""
    resume = args.resume is not None
    overrides = list(args.set)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if getattr(args, "visualdl", False):
        overrides.append("train.visualdl=true")
    if args.max_iters is not None and args.max_iters < 1:
        raise ConfigError("--max-iters must be >= 1")
    if getattr(args, "threads", None) is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if resume:
        run_dir = Path(args.resume or args.out or "")
        if not str(run_dir):
            raise ConfigError("--resume needs a run folder: --resume DIR or --out DIR")
        if args.config:
            raise ConfigError("--resume continues with the run's own config.yaml; drop -c "
                              "(use --set to change values)")
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"cannot resume: {run_dir / 'config.yaml'} not found")
        if args.resume and args.out and Path(args.resume).resolve() != Path(args.out).resolve():
            raise ConfigError(f"--resume {args.resume} continues that run in its own folder, but "
                              f"--out names another one ({args.out}); drop --out, or give "
                              "--resume the folder to continue")
        raw = load_raw(run_dir / "config.yaml", overrides)
        cfg = _checked_extras(build(raw))
        if shapes is not None:
            check_same_networks(run_dir, overrides, cfg, build, shapes)
        return cfg, run_dir, resume
    if not args.config:
        raise ConfigError("give an experiment file with -c/--config (or --resume DIR)")
    raw = load_raw(args.config, overrides)
    run_dir = Path(args.out or Path("runs") / Path(args.config).stem)
    return _checked_extras(build(raw)), run_dir, resume


def _checked_extras(cfg: Any) -> Any:
    """Refuse, before any work, a config that needs an optional package that is missing."""
    if getattr(cfg.train, "visualdl", False):
        log_writer_class()
    return cfg


def _shape_changes(before: dict, after: dict, limit: int = 4) -> list[str]:
    out = []
    for net in sorted(before.keys() | after.keys()):
        a, b = before.get(net, {}), after.get(net, {})
        for k in sorted(a.keys() | b.keys()):
            if k not in b:
                out.append(f"{net}.{k} would be dropped")
            elif k not in a:
                out.append(f"{net}.{k} would be new")
            elif a[k] != b[k]:
                out.append(f"{net}.{k} {a[k]} -> {b[k]}")
    more = [f"{len(out) - limit} more"] if len(out) > limit else []
    return out[:limit] + more


def check_same_networks(run_dir: Path, overrides: list[str], cfg: Any,
                        build: Callable[[dict], Any], shapes: Callable[[Any], dict]) -> None:
    """Refuse overrides that change the networks of a run being resumed (before anything is
    written): its checkpoint only loads into the architecture it was trained with."""
    saved = build(load_raw(run_dir / "config.yaml"))
    before = shapes(saved.model)
    after = shapes(cfg.model)
    if before == after:
        return
    culprits = []
    for o in overrides:
        try:
            alone = shapes(build(load_raw(run_dir / "config.yaml", [o])).model)
        except ConfigError:  # valid only together with another override
            alone = None
        if alone != before and (alone is not None or o.split("=", 1)[0].startswith("model.")):
            culprits.append(o)
    keys = ", ".join(f"--set {o}" for o in culprits) or "the overrides together"
    raise ConfigError(f"--resume cannot change the networks' parameters: {keys} changes "
                      f"{'; '.join(_shape_changes(before, after))}. The checkpoint in {run_dir} "
                      "only loads into the architecture it was trained with; train a new run "
                      "(-c FILE --out NEW_DIR) for another one. Nothing was changed")
