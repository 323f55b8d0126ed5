"""Per-round time of population training grows with K (clients per round), not N (population size).

  python -m benchmarks.population_rounds                        # N = 1000, 100000; K = 10, 30; ~3 min, 2 cores
  python -m benchmarks.population_rounds --ns 1000,100000 --ks 10,30,100 --rounds 4

One process, one population of max(N) clients (its first N are the population of N), the many_clients
default model and tiles (experiments/many_clients.py), FedAvg: for every (K, N) the median round time (the
jitted round on K clients, first round with compilation excluded), the median time to render a round's
tiles (on the prefetch thread, overlapping the round) and the time rounds waited for tiles. Interleaved
over N for each K, so that a changing machine load hits both N alike. Also prints the population's stored
bytes and build rate. Prints one JSON line per (K, N) and a final table.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1000,100000")
    ap.add_argument("--ks", default="10,30")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--cpu_devices", default="auto")
    args = ap.parse_args()
    from fedtransfer_jax.runtime import host_devices

    host_devices.configure(args.cpu_devices)
    from fedtransfer_jax.data.population import Population
    from fedtransfer_jax.runs import population_training as pt

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "many_clients.py")
    spec = importlib.util.spec_from_file_location("_many_clients", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config()
    ns = [int(x) for x in args.ns.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    t0 = time.perf_counter()
    population = Population(pt.population_spec(config, max(ns)))
    build_s = time.perf_counter() - t0
    print(json.dumps({"population": max(ns), "stored_bytes": population.nbytes, "bytes_per_client": population.nbytes / max(ns),
                      "build_s": round(build_s, 2), "build_clients_per_s": round(max(ns) / build_s)}), flush=True)
    trainer = pt.PopulationTrainer(config)
    rows = []
    for k in ks:
        for n in ns:
            out = trainer.train(population, num_clients=n, clients_per_round=k, noise_multiplier=0.0, rounds=args.rounds, seed=0)
            row = {"K": k, "N": n, **{key: round(v, 3) for key, v in out["timing"].items()}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| K | N | round s (median) | render s (median) | waited for tiles s (total) | first round s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['K']} | {r['N']} | {r['round_s_median']:.2f} | {r['render_s_median']:.2f} | "
              f"{r['host_wait_s_total']:.2f} | {r['first_round_s']:.1f} |")


if __name__ == "__main__":
    main()
