"""API and network faults are kopf's TemporaryError: the operator's loop tries the tick again after
its delay, the rollout is not failed. The API server here is a real HTTP server on loopback that
answers every call with an error (or a port nothing listens on); the tick is the operator's own."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import kopf
import pytest
from kubernetes import client

from ops.operator import reconcile_once
from ops.rollout.controller import Engine
from ops.rollout.kube import Kube


class _Failing(http.server.BaseHTTPRequestHandler):
    status = 503

    def _answer(self):
        body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"ServiceUnavailable"}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PATCH = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture(params=[503, 429, 500])
def failing_api(request):
    handler = type("Handler", (_Failing,), {"status": request.param})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", request.param
    finally:
        server.shutdown()
        server.server_close()


def _engine(host: str) -> tuple[Engine, list]:
    configuration = client.Configuration()
    configuration.host = host
    configuration.retries = 0
    emitted: list = []
    return Engine(Kube(client.ApiClient(configuration)), lambda *event: emitted.append(event)), emitted


def test_an_api_fault_makes_the_handler_retry_not_fail(failing_api):
    host, status = failing_api
    engine, emitted = _engine(host)
    with pytest.raises(kopf.TemporaryError) as caught:
        reconcile_once(engine, "don", "don-rf", delay=7.0)
    assert not isinstance(caught.value, kopf.PermanentError)
    assert caught.value.delay == 7.0
    assert f"don/don-rf: Kubernetes API answered {status}" in str(caught.value)
    assert emitted == []  # no Event, no status: nothing about the rollout was decided


def test_an_unreachable_api_server_makes_the_handler_retry():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine, emitted = _engine(f"http://127.0.0.1:{port}")
    with pytest.raises(kopf.TemporaryError, match="Kubernetes API unreachable") as caught:
        reconcile_once(engine, "don", "don-rf", delay=3.0)
    assert caught.value.delay == 3.0 and emitted == []


def test_a_stalled_api_server_times_out_and_the_handler_retries():
    """An API server that accepts the connection and never answers: every call gives up after
    Kube's timeout (the client's own default waits forever, holding the rollout)."""
    with socket.socket() as listener:   # accepts (the kernel's backlog), never reads or answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        configuration = client.Configuration()
        configuration.host = f"http://127.0.0.1:{listener.getsockname()[1]}"
        configuration.retries = 0
        emitted: list = []
        engine = Engine(Kube(client.ApiClient(configuration), timeout=(1.0, 1.0)),
                        lambda *event: emitted.append(event))
        started = time.monotonic()
        with pytest.raises(kopf.TemporaryError, match="Kubernetes API unreachable.*timed out"):
            reconcile_once(engine, "don", "don-rf", delay=2.0)
        assert time.monotonic() - started < 10 and emitted == []


def test_calls_time_out_by_default_and_a_call_may_name_its_own():
    from ops.rollout.kube import REQUEST_TIMEOUT

    class Sent(Exception):
        pass

    def sent(*args, _request_timeout=None, **kwargs):   # what the HTTP layer would be given
        raise Sent(_request_timeout)

    api_client = client.ApiClient()
    api_client.call_api = sent
    kube = Kube(api_client)
    with pytest.raises(Sent) as default:
        kube.get_rollout("don", "don-rf")
    with pytest.raises(Sent) as own:
        kube.custom.get_namespaced_custom_object("g", "v1", "don", "p", "x", _request_timeout=3)
    assert default.value.args == (REQUEST_TIMEOUT,) and own.value.args == (3,)


def test_a_bug_is_not_disguised_as_a_temporary_fault():
    class Broken(Engine):
        def tick(self, ns, name):
            raise KeyError("spec")

    with pytest.raises(KeyError):
        reconcile_once(Broken(kube=None, emit=None), "don", "don-rf", delay=1.0)
