"""One settings object: read from the environment when asked, or put in force by an application."""

import dataclasses
import threading
from pathlib import Path

from attnloop.config import DEFAULT_PROJECT, LabelStudioSettings, Settings, current, using


def test_settings_read_every_setting_from_the_environment():
    env = {
        "ATTNLOOP_HOME": "/srv/attnloop", "ATTNLOOP_STORE": "s3://frames/site", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "ATTNLOOP_SERVING_MODEL": "models:/m@champion", "ATTNLOOP_DASK_ADDRESS": "tcp://dask:8786",
        "ATTNLOOP_LABEL_STUDIO_URL": "http://ls:8080/", "ATTNLOOP_LABEL_STUDIO_TOKEN": "ls-token-7", "AWS_SECRET_ACCESS_KEY": "s3-key-9", "ATTNLOOP_GATE_MIN_GAIN": "0.05",
    }
    settings = Settings.from_env(env)
    assert (settings.home, settings.store_uri, settings.registry_uri) == (Path("/srv/attnloop"), "s3://frames/site", "http://mlflow:5000")
    assert (settings.serving_model, settings.dask_address, settings.gate.min_gain) == ("models:/m@champion", "tcp://dask:8786", 0.05)
    assert settings.label_studio == LabelStudioSettings("http://ls:8080", "ls-token-7", DEFAULT_PROJECT, None)
    assert "ls-token-7" not in repr(settings) and "s3-key-9" not in repr(settings)  # secrets stay out of logs
    bare = Settings.from_env({})
    assert (bare.serving_model, bare.dask_address, bare.label_studio.url) == (None, None, None)


def test_settings_put_in_force_reach_threads_and_end_with_their_block(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNLOOP_MODEL_NAME", "from-env")
    assert current().model_name == "from-env"
    mine = dataclasses.replace(Settings.from_env(), home=tmp_path, model_name="demo")
    seen = {}
    with using(mine):
        assert current() is mine
        worker = threading.Thread(target=lambda: seen.update(name=current().model_name))
        worker.start()
        worker.join()
    assert current().model_name == "from-env"  # the environment again, read afresh
    assert seen == {"name": "from-env"}  # a plain thread starts from an empty context: the environment's
