import json
import subprocess
import sys

CODE = """
import json, sys
import tracker_client, tracker_client.cli, tracker_client.api, tracker_client.sync
import tracker_client.integrations.keras, tracker_client.integrations.torch
heavy = ("django", "numpy", "PIL", "matplotlib", "torch", "pandas", "pynvml")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


def test_import_pulls_in_neither_django_nor_optional_heavy_libraries():
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=120
    )
    assert json.loads(out.stdout) == []


def test_public_api_surface():
    import tracker_client as tc

    for name in (
        "init",
        "log",
        "log_metric",
        "log_params",
        "log_image",
        "log_artifact",
        "log_text",
        "set_tags",
        "finish",
        "Run",
        "Client",
    ):
        assert callable(getattr(tc, name)), name
    assert tc.__version__


def test_module_level_functions_act_on_the_current_run(closed_port_url):
    import pytest
    import tracker_client as tc

    with pytest.raises(RuntimeError, match="init"):
        tc.log({"a": 1})
    run = tc.init(project="ws/p", url=closed_port_url, offline=True, telemetry=False)
    assert tc.current_run() is run
    tc.log({"a": 1})
    tc.log_metric("b", 2.0)
    tc.log_params({"lr": 0.1})
    tc.log_text("t", "x")
    tc.set_tags(["baseline"])
    second = tc.init(project="ws/p", url=closed_port_url, offline=True, telemetry=False)
    assert run.status == "finished" and tc.current_run() is second
    tc.finish()
    assert tc.current_run() is None
    tc.finish()  # no-op without a run
