"""Turn the JSON lines of bench_pursuit.py into the Markdown table of docs/benchmarks.md.

    python benchmarks/bench_pursuit.py > results.jsonl
    python benchmarks/report.py results.jsonl
"""

import json
import sys


def main(path):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    print("| problem | threads | solver | median s | signals/s | ratio | recovery |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = ""
        if "omp_speedup" in r:
            ratio = f"sparsecode OMP {r['omp_speedup']:.1f}x faster"
        elif "mp_speedup" in r:
            ratio = f"sparsecode MP {r['mp_speedup']:.1f}x faster"
        elif "ratio_time_vs_gemm" in r:
            ratio = f"{r['ratio_time_vs_gemm']:.2f}x the GEMM time"
        sps = f"{r['signals_per_s']:,.0f}" if "signals_per_s" in r else ""
        rec = f"{r['support_recovery']:.3f}" if "support_recovery" in r else ""
        timed = f" ({r['signals_timed']} signals)" if "signals_timed" in r else ""
        print(f"| {r['problem']} | {r['threads']} | {r['solver']}{timed} | {r['seconds']:.4f} "
              f"| {sps} | {ratio} | {rec} |")


if __name__ == "__main__":
    main(sys.argv[1])
