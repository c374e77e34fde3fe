"""Everything the console reads or changes, one module per page (predict, models, rollouts,
monitoring) and what they share (common), through the system's public interfaces only: model
servers over KServe V1/V2 HTTP, the model store through don_core.store, ModelRollouts through
ops.rollout.client (the calls of `python -m ops rollout`), the recorder's HTTP API.

No Streamlit here: the pages (console/app.py) call these and show what they return or the
ConsoleError's message."""
