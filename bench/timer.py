"""Run a command N times; print median wall seconds and peak RSS (MiB) of its process tree's largest process."""
import resource
import statistics
import subprocess
import sys
import time


def measure(cmd, runs):
    walls, peaks = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        p = subprocess.run(cmd, shell=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        walls.append(time.perf_counter() - t)
        if p.returncode != 0:
            sys.exit(f"command failed ({p.returncode}): {cmd}")
        peaks.append(max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024)
    return statistics.median(walls), max(peaks)


if __name__ == "__main__":
    runs = int(sys.argv[1])
    wall, peak = measure(sys.argv[2], runs)
    print(f"{wall:.3f} {peak:.1f}")
