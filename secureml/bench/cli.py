"""`secureml bench [GRID]`: run a benchmark grid and write its tables and plots."""
import shlex

DEFAULT_GRID = "experiments/bench_default.yaml"

# On/off options: flag -> help. Those marked True change what is measured, so the command line
# recorded with the results repeats them.
FLAGS = {
    "--rerun": ("measure every cell again instead of skipping finished ones", True),
    "--skip-unavailable": ("leave out settings and evaluations that are not installed "
                           "(listed under the results)", True),
    "--tables-only": ("run nothing; rebuild the tables and plots from the run folders", False),
    "--list": ("list the cells and whether each has finished, then exit", False),
    "--quiet": ("no progress output", False),
}


def add_arguments(parser) -> None:
    parser.description = (
        "Run every cell (data set x model x setting x seed) of a benchmark grid as an ordinary "
        "run, skip cells finished earlier, and write results.csv, results.json, results.md and "
        "plots: what each defence buys (accuracy, epsilon, robust accuracy, membership AUC, "
        "encrypted accuracy) against what it costs, also as ratios to the undefended baseline "
        "measured in the same invocation. See docs/benchmarks.md.")
    parser.add_argument("grid", nargs="?", default=DEFAULT_GRID,
                        help=f"benchmark grid YAML (default: {DEFAULT_GRID})")
    parser.add_argument("--out", help="parent folder of the benchmark folder "
                                      "(default: the grid's output.dir, 'runs/bench')")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a grid value, e.g. --set seeds=[0,1,2] "
                             "--set runtime.mixed_precision=true (repeatable; YAML values)")
    for flag, (text, _) in FLAGS.items():
        parser.add_argument(flag, action="store_true", help=text)


def main(args) -> int:
    from .execute import bench_directory, read_state, run_grid
    from .grid import load_grid
    from .results import write_results

    grid = load_grid(args.grid, args.overrides, skip_unavailable=args.skip_unavailable)
    bench_dir = bench_directory(grid, args.out)
    if args.list:
        for cell in grid.cells():
            done = read_state(bench_dir, cell) is not None
            print(f"{'done' if done else 'todo'}  {cell.id}")
        for name, reason in grid.unavailable.items():
            print(f"skip  {name}: {reason}")
        return 0
    if args.tables_only:
        files = write_results(grid, bench_dir)
        print(files["results.md"])
        return 0
    result = run_grid(grid, out_dir=args.out, rerun=args.rerun, progress=not args.quiet,
                      command=_command(args))
    print(result.files["results.md"])
    return 1 if result.failed else 0


def _command(args) -> str:
    """The command line that reproduces this invocation, for the results' provenance."""
    parts = ["secureml", "bench", args.grid]
    if args.out:
        parts += ["--out", args.out]
    for override in args.overrides:
        parts += ["--set", override]
    parts += [flag for flag, (_, recorded) in FLAGS.items()
              if recorded and getattr(args, flag[2:].replace("-", "_"))]
    return shlex.join(parts)
