"""`python -m bench`: run every benchmark of the pack and print their tables."""
from . import bench_ddim, eval_shapes

if __name__ == "__main__":
    eval_shapes.main([])
    bench_ddim.main([])
