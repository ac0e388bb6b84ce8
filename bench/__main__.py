"""`python -m bench`: run every benchmark of the pack and print their tables."""
from . import (bench_asyrp, bench_caso, bench_csds, bench_ddim, bench_doodl, bench_edict, bench_flow,
               bench_stylediffusion, eval_shapes, realscale, scorecard)

if __name__ == "__main__":
    scorecard.main([])
    eval_shapes.main([])
    bench_ddim.main([])
    bench_edict.main([])
    bench_edict.main(["--world", "sd3"])
    bench_asyrp.main([])
    bench_doodl.main([])
    bench_doodl.main(["--world", "sd3"])
    bench_flow.main([])
    bench_stylediffusion.main([])
    bench_caso.main([])
    bench_csds.main([])
    realscale.main([])
