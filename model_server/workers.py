"""The model as KServe's ModelServer holds it, in the main process and in each worker process.

With --workers N KServe pickles the registered model into N spawned processes (DonModel pickles
as its recipe). Each worker attaches its copy to its own fresh FastAPI app (model_server.routes)
and loads the version itself. Kept apart from model.py, which knows nothing of the routes.
"""
from __future__ import annotations

import asyncio
import threading

from don_core import telemetry
from model_server.model import QUIET_LOGGERS, DonModel
from model_server.routes import install
from model_server.wait_for_version import load_when_published


class ServedModel(DonModel):
    def __setstate__(self, state):
        super().__setstate__(state)
        telemetry.configure_logging(None, QUIET_LOGGERS)
        app = install(model=self)  # the worker's own (fresh) FastAPI app
        # Load in a thread: KServe's parent pings each worker and replaces one that does not
        # answer within 5 s. The worker's startup waits for the load, so it accepts no
        # connection before its model is ready (the other workers take them meanwhile), but
        # not for a version that is not in the store yet: then it answers "not ready, waiting".
        loader = threading.Thread(target=load_when_published, args=(self,), name="load-model",
                                  daemon=True)
        loader.start()

        async def wait_for_model():
            while loader.is_alive() and self.state != "waiting":
                await asyncio.sleep(0.05)

        app.router.on_startup.append(wait_for_model)
