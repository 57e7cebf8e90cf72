"""`align3gr pipeline`: the whole method on one config, stage after stage, reusing what is up to date.

The package's names load on first use (`__getattr__`), so commands that only read finished runs (`compare`) do not
import the stages' libraries.
"""

from __future__ import annotations

from align3gr.lazy import lazy_attributes

_EXPORTS = {
    "PipelineConfig": "align3gr.pipeline.config",
    "load_pipeline_config": "align3gr.pipeline.config",
    "default_run_dir": "align3gr.pipeline.run",
    "run_pipeline": "align3gr.pipeline.run",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
