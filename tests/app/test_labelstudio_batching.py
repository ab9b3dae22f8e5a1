""""Retrieve predictions" over many tasks goes through the engine's batching (embedded mode, the real
engine on the tiny checkpoint): the tasks' segmentations queue together behind a held batch and run
as one encoder batch."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from app.backends.embedded import EmbeddedBackend
from app.main import create_app
from app.settings import Settings
from tests.app.conftest import IMAGE_SIZE
from tests.support.api import reference_id
from tests.support.images import REFERENCE, TARGET
from tests.support.label_studio import CONFIG, PROJECT, SCENES, TOKEN, Studio, brush, task
from tests.support.live_server import Gate, LiveServer
from tests.support.metrics import metric
from tests.support.net import eventually

TASKS = 6


@pytest.fixture(scope="module")
def served(tiny_checkpoint, basis_cache_dir, tmp_path_factory) -> Iterator[tuple[str, Gate]]:
    studio = Studio()
    settings = Settings(model_size="tiny", weights=str(tiny_checkpoint), image_size=IMAGE_SIZE, device="cpu",
                        basis_cache_dir=basis_cache_dir, max_batch=TASKS, max_wait_ms=5,
                        label_studio_url=studio.live.url, label_studio_token=TOKEN,
                        pretrain_dir=tmp_path_factory.mktemp("pretrain"))
    backend = EmbeddedBackend(settings)
    live = LiveServer(create_app(settings, backend)).start(ready_path="/readyz")
    gate = Gate(backend._batcher._run_batch)
    backend._batcher._run_batch = gate
    yield live.url, gate
    live.stop()
    studio.live.stop()


def test_the_tasks_of_one_predict_call_run_as_one_batch(served) -> None:
    url, gate = served
    with httpx.Client(base_url=url, timeout=120) as http:
        answer = http.post("/labelstudio/webhook", json={
            "action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": [brush(SCENES["a.png"].mask)]},
            "task": task(1, "a.png"), "project": PROJECT})
        assert answer.status_code == 201
        eventually(lambda: http.get("/references").json()["total"] == 1, what="the example")
        held = reference_id(http, REFERENCE)

    async def scenario() -> tuple[httpx.Response, list[int]]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            gate.close()
            holding = asyncio.create_task(http.post("/segment", data={"reference_ids": held},
                                                    files={"target": ("t.png", TARGET.png, "image/png")}))
            await asyncio.to_thread(gate.entered.wait, 120)
            first = len(gate.batches)
            predicting = asyncio.create_task(http.post("/labelstudio/predict", json={
                "tasks": [task(number, "t.png") for number in range(TASKS)], "project": "7.1", "label_config": CONFIG}))
            await asyncio.to_thread(eventually, lambda: metric(url, "insid3_queue_depth") == TASKS)
            gate.open()
            assert (await holding).status_code == 200
            return await predicting, gate.batches[first:]

    answer, batches = asyncio.run(scenario())
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["results"]) == TASKS
    assert batches == [1, TASKS]  # the held request, then every task's segmentation in one batch
