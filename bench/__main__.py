"""`python -m bench`: run every benchmark of the pack and print their tables."""
from . import bench_ddim

if __name__ == "__main__":
    bench_ddim.main()
