"""The Label Studio end-to-end scenario (run by scripts/labelstudio-e2e.sh).

Starts Label Studio (from ``--label-studio``, offline, on loopback, a fresh data folder) and
``insid3 serve`` with a random ViT-S (the shrunk ``tiny`` shape by default) and API keys of two
tenants; creates a project (Image + BrushLabels + KeyPointLabels), imports disc scenes, connects
the backend with basic auth, annotates two tasks through Label Studio's API, retrieves predictions
for the others and compares them with ``POST /segment``; then tenant isolation, an update, a
deletion, an interactive prediction, a resync by "Start training" and bad payloads. Prints one
line per check; the last line is
``labelstudio-e2e: N checks passed``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from app.labelstudio.brush import mask_to_rle, rle_to_mask
from bench.scenes import free_port, png, wait_ready

ROOT = Path(__file__).resolve().parent.parent
LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="mask" toName="image"><Label value="disc" background="#00ff66"/></BrushLabels>
  <KeyPointLabels name="point" toName="image"><Label value="centre" background="#ffee00"/></KeyPointLabels>
</View>"""
DISCS = [(60, 70, 26), (90, 150, 30), (70, 110, 24), (100, 60, 28), (60, 170, 25), (95, 100, 27)]
HEIGHT, WIDTH = 160, 220
WAIT_S = 180.0


class Checks:
    """Counts checks; a failed one is printed and remembered."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, ok: bool, what: str, detail: object = "") -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {what}{'' if ok else f': {detail}'}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
        return ok


def scene(seed: int, disc: tuple[int, int, int]) -> tuple[bytes, np.ndarray]:
    """A red disc on noise and clutter: PNG bytes and the disc's mask."""
    rng = np.random.default_rng(seed)
    image = (rng.random((HEIGHT, WIDTH, 3)) * 255).astype(np.uint8)
    for _ in range(10):
        y, x = rng.integers(0, HEIGHT - 20), rng.integers(0, WIDTH - 20)
        image[y:y + rng.integers(5, 20), x:x + rng.integers(5, 20)] = rng.integers(0, 256, 3)
    rows, cols = np.ogrid[:HEIGHT, :WIDTH]
    cy, cx, r = disc
    mask = (rows - cy) ** 2 + (cols - cx) ** 2 < r * r
    image[mask] = (220, 30, 30)
    return png(image), mask


def wait_for(condition: Callable[[], object], what: str, timeout_s: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out waiting for {what}")


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, env={**os.environ, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def start_label_studio(binary: str, work: Path, port: int, token: str, password: str) -> subprocess.Popen:
    env = {
        "LABEL_STUDIO_BASE_DATA_DIR": str(work / "ls"), "LABEL_STUDIO_HOST": f"http://127.0.0.1:{port}",
        "LABEL_STUDIO_USERNAME": "annotator@example.com", "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false", "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
    }
    return start([binary, "start", "--no-browser", "--port", str(port), "--data-dir", str(work / "ls"),
                  "--internal-host", "127.0.0.1"], env, work / "label-studio.log")


def start_service(work: Path, port: int, ls_port: int, ls_token: str, keys: dict[str, str],
                  model_size: str) -> subprocess.Popen:
    checkpoint = work / f"random_{model_size}.pth"
    subprocess.run([sys.executable, "-m", "insid3", "make-checkpoint", "--model-size", model_size, "--out",
                    str(checkpoint)], check=True, stdout=subprocess.DEVNULL)
    env = {"INSID3_API_KEYS": ",".join(f"{tenant}:{key}" for tenant, key in keys.items()),
           "INSID3_LABEL_STUDIO_URL": f"http://127.0.0.1:{ls_port}", "INSID3_LABEL_STUDIO_TOKEN": ls_token,
           "INSID3_PRETRAIN_DIR": str(work / "pretrain"), "PYTHONPATH": str(ROOT)}
    return start([sys.executable, "-m", "insid3", "serve", "--port", str(port), "--model-size", model_size,
                  "--weights", str(checkpoint), "--image-size", "224", "--device", "cpu", "--runtime", "torch"],
                 env, work / "serve.log")


def personal_access_token(ls_url: str, legacy_token: str) -> str:
    """A personal access token (a JWT refresh token) of the Label Studio user: what the service is
    configured with, so that it exchanges it for access tokens as a real deployment does."""
    answer = httpx.post(f"{ls_url}/api/token/", headers={"Authorization": f"Token {legacy_token}"}, timeout=60)
    return answer.raise_for_status().json()["token"]


def brush_region(mask: np.ndarray) -> dict:
    return {"from_name": "mask", "to_name": "image", "type": "brushlabels", "original_width": WIDTH,
            "original_height": HEIGHT, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": ["disc"]}}


def keypoint_region(x: float, y: float) -> dict:
    return {"from_name": "point", "to_name": "image", "type": "keypointlabels", "original_width": WIDTH,
            "original_height": HEIGHT, "value": {"x": x * 100 / WIDTH, "y": y * 100 / HEIGHT, "width": 1,
                                                 "keypointlabels": ["centre"]}}


class Scenario:
    """The steps against one Label Studio and one service."""

    def __init__(self, ls_url: str, ls_token: str, service_url: str, keys: dict[str, str], checks: Checks) -> None:
        self.ls = httpx.Client(base_url=ls_url, headers={"Authorization": f"Token {ls_token}"}, timeout=300)
        self.service_url = service_url
        self.keys = keys
        self.checks = checks
        self.scenes = [scene(seed, disc) for seed, disc in enumerate(DISCS)]
        self.project = 0
        self.tasks: list[int] = []
        self.backend = 0

    def api(self, tenant: str) -> httpx.Client:
        return httpx.Client(base_url=self.service_url, headers={"X-API-Key": self.keys[tenant]}, timeout=300)

    def examples(self, tenant: str) -> list[dict]:
        items = self.api(tenant).get("/references", params={"limit": 1000}).json()["items"]
        return [item for item in items if (item.get("name") or "").startswith(f"labelstudio:{self.project}:")]

    def mask_examples(self, tenant: str = "alpha") -> list[dict]:
        return [item for item in self.examples(tenant) if ":mask:" in item["name"]]

    def create_project(self) -> None:
        self.project = self.ls.post("/api/projects", json={"title": "INSID3 e2e", "label_config": LABEL_CONFIG}
                                    ).raise_for_status().json()["id"]
        files = {f"file{i}": (f"scene{i}.png", data, "image/png") for i, (data, _) in enumerate(self.scenes)}
        self.ls.post(f"/api/projects/{self.project}/import", files=files).raise_for_status()
        tasks = self.ls.get("/api/tasks", params={"project": self.project, "page_size": 100}).json()["tasks"]
        by_name = {task["data"]["image"].rsplit("-", 1)[-1]: task["id"] for task in tasks}
        self.tasks = [by_name[f"scene{i}.png"] for i in range(len(self.scenes))]
        self.checks.check(len(self.tasks) == len(self.scenes), f"{len(self.scenes)} images imported as tasks")

    def connect(self) -> None:
        wrong = self.ls.post("/api/ml", json={"project": self.project, "url": f"{self.service_url}/labelstudio",
                                              "auth_method": "BASIC_AUTH", "basic_auth_user": "insid3",
                                              "basic_auth_pass": "not-a-key", "title": "wrong key"})
        self.checks.check(wrong.status_code >= 400 or wrong.json().get("state") != "CO",
                          "a wrong basic-auth password does not connect", wrong.text[:300])
        if wrong.status_code < 400:
            self.ls.delete(f"/api/ml/{wrong.json()['id']}")
        answer = self.ls.post("/api/ml", json={
            "project": self.project, "url": f"{self.service_url}/labelstudio", "title": "INSID3",
            "auth_method": "BASIC_AUTH", "basic_auth_user": "insid3", "basic_auth_pass": self.keys["alpha"],
            "is_interactive": True}).json()
        self.backend = answer.get("id", 0)
        self.checks.check(answer.get("state") == "CO", "the backend connects with basic auth (state Connected)",
                          answer)
        hooks = self.ls.get("/api/webhooks", params={"project": self.project}).json()
        authorized = [hook for hook in hooks if hook["url"].endswith("/labelstudio/webhook")
                      and "Authorization" in (hook.get("headers") or {})]
        self.checks.check(len(authorized) == 1, "the backend gave its webhook the tenant's credentials", hooks)

    def annotate(self, index: int, mask: np.ndarray, point: tuple[float, float] | None = None) -> int:
        result = [brush_region(mask)] + ([keypoint_region(*point)] if point else [])
        return self.ls.post(f"/api/tasks/{self.tasks[index]}/annotations", json={"result": result}
                            ).raise_for_status().json()["id"]

    def segment(self, reference_ids: list[str], index: int) -> np.ndarray:
        answer = self.api("alpha").post("/segment", data={"reference_ids": ",".join(reference_ids)},
                                        files={"target": ("t.png", self.scenes[index][0], "image/png")})
        rle = answer.raise_for_status().json()["results"][0]["rle"]
        return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)

    def retrieve(self, indices: list[int]) -> dict[int, dict]:
        ids = [self.tasks[i] for i in indices]
        self.ls.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": self.project},
                     json={"selectedItems": {"all": False, "included": ids}}).raise_for_status()
        predictions = {}
        for index, task in zip(indices, ids, strict=True):
            found = self.ls.get("/api/predictions", params={"task": task}).json()
            predictions[index] = max(found, key=lambda p: p["id"]) if found else {}
        return predictions

    def compare(self, predictions: dict[int, dict], reference_ids: list[str], what: str) -> None:
        for index, prediction in predictions.items():
            brushes = [r for r in prediction.get("result", []) if r["type"] == "brushlabels"]
            if not self.checks.check(len(brushes) == 1, f"{what}: task {index} has one brush result", prediction):
                continue
            value = brushes[0]["value"]
            mask = rle_to_mask(value["rle"], brushes[0]["original_width"], brushes[0]["original_height"])
            expected = self.segment(reference_ids, index)
            self.checks.check(mask.shape == expected.shape and bool((mask == expected).all()),
                              f"{what}: task {index}'s mask equals POST /segment pixel for pixel "
                              f"({int(mask.sum())} px)", f"{int((mask != expected).sum())} pixels differ")
            self.checks.check(0 < mask.sum() < mask.size, f"{what}: task {index}'s mask is neither empty nor "
                              "the whole image", int(mask.sum()))

    def setup_version(self) -> str:
        answer = httpx.post(f"{self.service_url}/labelstudio/setup", auth=("insid3", self.keys["alpha"]),
                            json={"project": f"{self.project}.0", "schema": LABEL_CONFIG}, timeout=60)
        return answer.raise_for_status().json()["model_version"]

    def run(self) -> None:
        self.create_project()
        self.connect()
        first = self.annotate(0, self.scenes[0][1], point=(DISCS[0][1], DISCS[0][0]))
        second = self.annotate(1, self.scenes[1][1])
        examples = wait_for(lambda: len(self.mask_examples()) == 2 and self.mask_examples(), "two examples")
        self.checks.check(len(examples) == 2, "two brush annotations became two references of tenant alpha")
        self.checks.check(any(":points:" in item["name"] for item in self.examples("alpha")),
                          "the keypoint annotation became a match reference")
        self.checks.check(self.api("beta").get("/references").json()["total"] == 0,
                          "tenant beta's key lists no references")
        ids = [item["reference_id"] for item in examples]
        rest = list(range(2, len(self.scenes)))
        predictions = self.retrieve(rest)
        self.compare(predictions, ids, "retrieve predictions")
        points = [r for p in predictions.values() for r in p.get("result", []) if r["type"] == "keypointlabels"]
        self.checks.check(len(points) == len(rest), "every predicted task has the matched keypoint", points[:1])
        version = self.setup_version()
        self.checks.check(all(p.get("model_version") == version for p in predictions.values()),
                          "predictions carry the current model_version", version)
        self.update_and_delete(first, second, version)
        self.interactive()
        self.resync()
        self.bad_payloads()

    def update_and_delete(self, first: int, second: int, version: str) -> None:
        smaller = self.scenes[1][1] & (np.arange(WIDTH)[None, :] < DISCS[1][1])  # the left half of the disc
        before = {item["reference_id"] for item in self.mask_examples()}
        self.ls.patch(f"/api/annotations/{second}", json={"result": [brush_region(smaller)]}).raise_for_status()
        changed = wait_for(lambda: (now := {i["reference_id"] for i in self.mask_examples()}) != before
                           and len(now) == 2 and now, "the updated example")
        self.checks.check(len(changed & before) == 1, "an updated annotation replaced its example")
        self.checks.check(self.setup_version() != version, "the model_version changed with the examples")
        self.ls.delete(f"/api/annotations/{second}").raise_for_status()
        remaining = wait_for(lambda: len(self.mask_examples()) == 1 and self.mask_examples(), "one example left")
        self.checks.check(len(remaining) == 1, "a deleted annotation removed its example")
        self.compare(self.retrieve([2]), [remaining[0]["reference_id"]], "after the deletion")

    def interactive(self) -> None:
        stroke = self.scenes[3][1] & (np.arange(HEIGHT)[:, None] < DISCS[3][0])  # the top half of the disc
        answer = self.ls.post(f"/api/ml/{self.backend}/interactive-annotating",
                              json={"task": self.tasks[3], "context": {"result": [brush_region(stroke)]}})
        data = answer.json().get("data") or {}
        brushes = [r for r in data.get("result", []) if r["type"] == "brushlabels"]
        self.checks.check(answer.status_code == 200 and len(brushes) == 1,
                          "interactive pre-annotation: a stroke gives a brush mask", answer.text[:300])

    def resync(self) -> None:
        [example] = self.mask_examples()
        self.api("alpha").delete(f"/references/{example['reference_id']}").raise_for_status()
        self.ls.post(f"/api/ml/{self.backend}/train", json={}).raise_for_status()
        back = wait_for(self.mask_examples, "the example made again")
        self.checks.check([item["reference_id"] for item in back] == [example["reference_id"]],
                          "Start training made a lost example again", back)

    def bad_payloads(self) -> None:
        auth = ("insid3", self.keys["alpha"])
        task = {"id": 1, "data": {"image": "http://elsewhere.example/x.png"}}
        text_only = "<View><Text name='t' value='$t'/></View>"
        cases = [
            ({"tasks": [task], "project": f"{self.project}.0", "label_config": text_only}, "unsupported_label_config"),
            ({"tasks": [task], "project": f"{self.project}.0", "label_config": LABEL_CONFIG}, "image_host_not_allowed"),
            ({"tasks": [{"id": 2, "data": {}}], "project": f"{self.project}.0", "label_config": LABEL_CONFIG},
             "image_unavailable"),
        ]
        for body, code in cases:
            answer = httpx.post(f"{self.service_url}/labelstudio/predict", json=body, auth=auth, timeout=60)
            self.checks.check(answer.status_code == 422 and answer.json().get("error") == code,
                              f"a bad payload gets 422 {code}", answer.text[:300])
        unauthorized = httpx.post(f"{self.service_url}/labelstudio/predict", json={}, auth=("x", "bad"), timeout=60)
        self.checks.check(unauthorized.status_code == 401, "a wrong key gets 401", unauthorized.text[:200])


def screenshot(ls_url: str, password: str, project: int, task: int, out: Path) -> None:
    """Label Studio in headless Chromium: log in, open a task with predictions, save a PNG."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"  # Debian's chromium and chromedriver (scripts/setup.sh --dev)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
    try:
        driver.get(f"{ls_url}/user/login/")
        driver.find_element(By.NAME, "email").send_keys("annotator@example.com")
        driver.find_element(By.NAME, "password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit]").click()
        time.sleep(3)
        driver.get(f"{ls_url}/projects/{project}/data?tab=0&task={task}")
        time.sleep(12)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()
    with Image.open(out) as shot:  # 256 colours: a third of the size, no visible difference
        shot.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(out, optimize=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label-studio", required=True, help="the label-studio executable")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of a predicted task here")
    parser.add_argument("--model-size", default="tiny", help="of the random checkpoint (default tiny: a shrunk "
                        "ViT-S/16; a random full ViT-S masks whole images, which makes the comparison vacuous)")
    args = parser.parse_args()
    checks = Checks()
    keys = {"alpha": secrets.token_urlsafe(16), "beta": secrets.token_urlsafe(16)}
    ls_token, password = secrets.token_hex(20), secrets.token_urlsafe(12)
    ls_port, port = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="insid3-ls-e2e-") as folder:
        work = Path(folder)
        processes = [start_label_studio(args.label_studio, work, ls_port, ls_token, password)]
        try:
            ls_url, service_url = f"http://127.0.0.1:{ls_port}", f"http://127.0.0.1:{port}"
            wait_for(lambda: _answers(f"{ls_url}/health"), "Label Studio to start", 300)
            access_token = personal_access_token(ls_url, ls_token)
            checks.check(access_token.count(".") == 2, "Label Studio made a personal access token for the service")
            processes.append(start_service(work, port, ls_port, access_token, keys, args.model_size))
            if not wait_ready(service_url, processes[1]):
                raise RuntimeError(f"insid3 serve did not become ready:\n{(work / 'serve.log').read_text()[-3000:]}")
            scenario = Scenario(ls_url, ls_token, service_url, keys, checks)
            scenario.run()
            if args.screenshot:
                screenshot(ls_url, password, scenario.project, scenario.tasks[4], args.screenshot)
                print(f"screenshot: {args.screenshot}")
        except Exception as exc:
            checks.check(False, "the scenario ran to its end", repr(exc))
            for log in ("serve.log", "label-studio.log"):
                print(f"--- {log} (tail)\n{(work / log).read_text(errors='replace')[-4000:]}")
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(30)
    if checks.failed:
        print(f"labelstudio-e2e: {len(checks.failed)} of {checks.passed + len(checks.failed)} checks FAILED")
        return 1
    print(f"labelstudio-e2e: {checks.passed} checks passed")
    return 0


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    sys.exit(main())
