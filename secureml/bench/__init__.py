"""Benchmarks: accuracy against cost for every defence, over a grid of ordinary runs.

```python
from secureml.bench import load_grid, run_grid
result = run_grid(load_grid("experiments/bench_default.yaml"))
print(result.files["results.md"])
```
`secureml bench [GRID]` does the same from the command line. See docs/benchmarks.md.
"""
from .execute import BenchResult, bench_directory, run_grid
from .grid import Cell, Grid, load_grid
from .results import collect_rows, pareto_front, summarize, write_results

__all__ = ["BenchResult", "Cell", "Grid", "bench_directory", "collect_rows", "load_grid",
           "pareto_front", "run_grid", "summarize", "write_results"]
