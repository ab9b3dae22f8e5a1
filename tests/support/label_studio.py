"""A stand-in for the Label Studio endpoints the /labelstudio backend calls (task images for a token,
the project's webhooks), and the task and region shapes Label Studio sends."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI, Request, Response

from app.labelstudio.brush import mask_to_rle
from tests.support.images import TARGET, TARGET_2, TWO_DISCS, disc_scene
from tests.support.live_server import LiveServer

TOKEN = "studio-token-123"
CONFIG = ('<View><Image name="img" value="$image"/><BrushLabels name="brush" toName="img"><Label value="disc"/>'
          '</BrushLabels><KeyPointLabels name="kp" toName="img"><Label value="centre"/></KeyPointLabels></View>')
SCENES = {"a.png": disc_scene(21, 150, 200, [(70, 80, 30)]), "b.png": disc_scene(22, 160, 180, [(90, 100, 32)]),
          "t.png": TARGET, "t2.png": TARGET_2, "two.png": TWO_DISCS}
PROJECT = {"id": 7, "label_config": CONFIG}


class Studio:
    """Serves ``/data/upload/7/<name>`` to the token only, and a project webhook that records PATCHes."""

    def __init__(self) -> None:
        self.patches: list[dict] = []
        app = FastAPI()

        @app.get("/data/upload/7/{name}")
        async def image(name: str, request: Request) -> Response:
            if request.headers.get("authorization") != f"Token {TOKEN}":
                return Response(status_code=401)
            scene = SCENES.get(name)
            return Response(scene.png, media_type="image/png") if scene else Response(status_code=404)

        @app.get("/api/webhooks")
        async def webhooks() -> list[dict]:
            return [{"id": 3, "url": "http://insid3/labelstudio/webhook", "headers": {}}]

        @app.patch("/api/webhooks/{number}")
        async def patch(number: int, request: Request) -> dict:
            self.patches.append(await request.json())
            return {}

        self.live = LiveServer(app).start(ready_path="/api/webhooks")


def task(number: int, name: str) -> dict:
    return {"id": number, "data": {"image": f"/data/upload/7/{name}"}}


def brush(mask: np.ndarray) -> dict:
    height, width = mask.shape
    return {"from_name": "brush", "to_name": "img", "type": "brushlabels", "original_width": width,
            "original_height": height, "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["disc"]}}
