"""The annotation tools of the live tests: doccano and Label Studio started from the venvs `make test-live`
creates, each offline on a free port with its data in a temporary directory, and the REST calls a round
trip needs (create a project, import, annotate, export), made as a user's script would make them.

A tool's first start migrates an empty database (minutes for Label Studio on a busy machine). The migrated
data directory is kept in the tool's venv (`live-template/`, removed when make re-syncs the venv) and
copied for each run, so later runs only start the servers.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from conftest import ROOT, free_port

DOCCANO_VENV = Path(os.environ.get("DOCCANO_VENV", ROOT / ".venv-doccano"))
LABEL_STUDIO_VENV = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
SETUP_TIMEOUT = 900  # migrating Label Studio's database on two busy cores
START_TIMEOUT = 300
TASK_TIMEOUT = 120  # doccano's import and export tasks
USERNAME, EMAIL, PASSWORD = "admin", "admin@example.com", "live-test-password"


def tool_command(venv: Path, name: str) -> str:
    path = venv / "bin" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: run the live tests with `make test-live`, which creates {venv.name}")
    return str(path)


def tool_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a tool's processes: HOME in the temporary directory, so that nothing is written
    to the user's (Label Studio creates its default data directory there before reading --data-dir)."""
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home), "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1", **extra}


def run_setup(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=SETUP_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}"


def fresh_data_dir(venv: Path, target: Path, make_template: Callable[[Path], None]) -> Path:
    """`target` as a copy of the tool's migrated data directory, made first if the venv has none."""
    template = venv / "live-template"
    if not template.is_dir():
        partial = venv / f"live-template.partial{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        make_template(partial)
        try:
            partial.rename(template)
        except OSError:  # another run made it meanwhile
            shutil.rmtree(partial)
            assert template.is_dir()
    shutil.copytree(template, target)
    return target


@contextlib.contextmanager
def serving(commands: list[list[str]], env: dict[str, str], logs: Path, ready_url: str) -> Iterator[None]:
    """Run the commands until the block ends, once `ready_url` answers 200; each in its own process group,
    ended with everything it started (gunicorn's and celery's workers)."""
    processes = []
    try:
        for command in commands:
            log = open(logs / f"{Path(command[0]).name}-{command[1]}.log", "w")
            processes.append(subprocess.Popen(command, env=env, cwd=logs, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        wait_until_ready(ready_url, processes, logs)
        yield
    finally:
        for process in processes:
            stop(process)


def wait_until_ready(url: str, processes: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        exited = [p for p in processes if p.poll() is not None]
        assert not exited, f"{exited[0].args} exited with {exited[0].returncode}:\n{log_tails(logs)}"
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=5).status_code == 200:
                return
        time.sleep(1)
    pytest.fail(f"{url} did not answer within {START_TIMEOUT} s:\n{log_tails(logs)}")


def log_tails(logs: Path) -> str:
    return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs.glob("*.log"))


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


# ------------------------------------------------------------------ doccano


class Doccano:
    """doccano's REST API (v1) with the token its login returns."""

    def __init__(self, url: str):
        self.url = f"{url}/v1"
        login = requests.post(f"{self.url}/auth/login/", json={"username": USERNAME, "password": PASSWORD}, timeout=30)
        login.raise_for_status()
        self.http = requests.Session()  # no session cookie: with it, doccano asks for a CSRF token
        self.http.headers["Authorization"] = f"Token {login.json()['key']}"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.http.request(method, f"{self.url}/{path}", timeout=60, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def create_project(self, name: str, labels: list[str], collaborative: bool = False) -> int:
        project = self.call("POST", "projects", json={
            "name": name, "description": name, "guideline": "", "project_type": "DocumentClassification",
            "resourcetype": "TextClassificationProject", "collaborative_annotation": collaborative,
            "single_class_classification": False, "random_order": False}).json()
        for label in labels:
            self.call("POST", f"projects/{project['id']}/category-types", json={"text": label})
        return project["id"]

    def label_ids(self, project: int) -> dict[str, int]:
        return {label["text"]: label["id"] for label in self.call("GET", f"projects/{project}/category-types").json()}

    def wait(self, task_id: str) -> dict:
        deadline = time.monotonic() + TASK_TIMEOUT
        while time.monotonic() < deadline:
            status = self.call("GET", f"tasks/status/{task_id}").json()
            if status.get("ready"):
                assert not status.get("error"), status
                return status
            time.sleep(0.5)
        pytest.fail(f"doccano's task {task_id} did not finish within {TASK_TIMEOUT} s (is `doccano task` running?)")

    def import_jsonl(self, project: int, path: Path) -> None:
        """Upload the file (filepond, as the web page does) and import it as JSONL with its `label` column."""
        with open(path, "rb") as handle:
            upload = self.call("POST", "fp/process/", files={"filepond": (path.name, handle)}).text
        task = self.call("POST", f"projects/{project}/upload", json={
            "format": "JSONL", "task": "DocumentClassification", "uploadIds": [upload], "column_data": "text",
            "column_label": "label", "encoding": "utf_8"}).json()
        assert self.wait(task["task_id"])["result"] == {"error": []}

    def examples(self, project: int) -> list[dict]:
        return sorted(self.call("GET", f"projects/{project}/examples", params={"limit": 1000}).json()["results"],
                      key=lambda example: example["id"])

    def categories(self, project: int, example: int) -> list[dict]:
        return self.call("GET", f"projects/{project}/examples/{example}/categories").json()

    def add_category(self, project: int, example: int, label: int) -> None:
        self.call("POST", f"projects/{project}/examples/{example}/categories", json={"label": label})

    def remove_category(self, project: int, example: int, category: int) -> None:
        self.call("DELETE", f"projects/{project}/examples/{example}/categories/{category}")

    def comment(self, project: int, example: int, text: str) -> None:
        self.call("POST", f"projects/{project}/comments", params={"example": example}, json={"text": text})

    def export(self, project: int, file_format: str) -> bytes:
        """The zip the web page's Export button downloads, in `file_format` (JSONL, JSON, CSV, fastText)."""
        formats = [option["name"] for option in self.call("GET", f"projects/{project}/download-format").json()]
        assert file_format in formats, formats
        task = self.call("POST", f"projects/{project}/download",
                         json={"format": file_format, "exportApproved": False}).json()
        self.wait(task["task_id"])
        return self.call("GET", f"projects/{project}/download", params={"taskId": task["task_id"]}).content


def doccano_template(data: Path) -> None:
    env = tool_env(data / "home", DOCCANO_HOME=str(data))
    doccano = tool_command(DOCCANO_VENV, "doccano")
    run_setup([doccano, "init"], env)
    run_setup([doccano, "createuser", "--username", USERNAME, "--password", PASSWORD], env)


@contextlib.contextmanager
def doccano_server(work: Path) -> Iterator[Doccano]:
    """doccano's web server (one gunicorn worker) and its task worker (celery, whose broker is the same
    SQLite database): imports and exports run there."""
    data = fresh_data_dir(DOCCANO_VENV, work / "doccano", doccano_template)
    env = tool_env(data / "home", DOCCANO_HOME=str(data))
    doccano, port = tool_command(DOCCANO_VENV, "doccano"), free_port()
    commands = [[doccano, "webserver", "--port", str(port), "--workers", "1"],
                [doccano, "task", "--concurrency", "1"]]
    # the health check also sends a task to the worker: it answers 200 once both are up
    with serving(commands, env, data, f"http://127.0.0.1:{port}/v1/health/?format=json"):
        yield Doccano(f"http://127.0.0.1:{port}")


# ------------------------------------------------------------------ Label Studio


class LabelStudio:
    """Label Studio's REST API with a personal access token, the authentication it enables by default
    (legacy tokens are off): the token is made once through a logged-in session, as on the Account page,
    and each call sends the short-lived access token the refresh endpoint gives for it."""

    def __init__(self, url: str):
        self.url = url
        browser = requests.Session()
        browser.get(f"{url}/user/login/", timeout=30).raise_for_status()
        csrf = browser.cookies["csrftoken"]
        login = browser.post(f"{url}/user/login/", data={"email": EMAIL, "password": PASSWORD,
                                                         "csrfmiddlewaretoken": csrf},
                             headers={"Referer": f"{url}/user/login/"}, allow_redirects=False, timeout=30)
        assert login.status_code == 302, f"login failed: {login.status_code}"
        token = browser.post(f"{url}/api/token/", headers={"X-CSRFToken": browser.cookies["csrftoken"],
                                                           "Referer": f"{url}/"}, timeout=30)
        assert token.status_code == 201, token.text[:500]
        access = requests.post(f"{url}/api/token/refresh/", json={"refresh": token.json()["token"]}, timeout=30)
        access.raise_for_status()
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {access.json()['access']}"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        response = self.http.request(method, f"{self.url}/api/{path}", timeout=60, **kwargs)
        assert response.ok, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response

    def create_project(self, title: str, label_config: str) -> int:
        return self.call("POST", "projects", json={"title": title, "label_config": label_config}).json()["id"]

    def import_tasks(self, project: int, tasks: list[dict]) -> None:
        result = self.call("POST", f"projects/{project}/import", json=tasks).json()
        assert result["task_count"] == len(tasks), result

    def tasks(self, project: int) -> list[dict]:
        page = self.call("GET", "tasks", params={"project": project, "page_size": 1000}).json()
        return sorted(page["tasks"], key=lambda task: task["id"])

    def annotate(self, task: int, choices: list[str] | None, cancelled: bool = False) -> int:
        """A submitted annotation choosing `choices` (None: nothing chosen), or a skipped one (`cancelled`)."""
        return self.call("POST", f"tasks/{task}/annotations", json={
            "result": choices_result(choices), "was_cancelled": cancelled}).json()["id"]

    def change(self, annotation: int, choices: list[str]) -> None:
        self.call("PATCH", f"annotations/{annotation}", json={"result": choices_result(choices)})

    def export(self, project: int, export_type: str) -> bytes:
        """Every task (annotated or not) in `export_type` (JSON, JSON_MIN, CSV, TSV)."""
        formats = [f["name"] for f in self.call("GET", f"projects/{project}/export/formats").json()
                   if not f.get("disabled")]
        assert export_type in formats, formats
        return self.call("GET", f"projects/{project}/export",
                         params={"exportType": export_type, "download_all_tasks": "true"}).content


def choices_result(choices: list[str] | None) -> list[dict]:
    if not choices:
        return []
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": choices}}]


def label_studio_env(data: Path) -> dict[str, str]:
    return tool_env(data / "home", LABEL_STUDIO_BASE_DATA_DIR=str(data), LATEST_VERSION_CHECK="false",
                    COLLECT_ANALYTICS="false")


def label_studio_template(data: Path) -> None:
    """`label-studio version` migrates the database and exits."""
    run_setup([tool_command(LABEL_STUDIO_VENV, "label-studio"), "version", "--data-dir", str(data)],
              label_studio_env(data))


@contextlib.contextmanager
def label_studio_server(work: Path) -> Iterator[LabelStudio]:
    data = fresh_data_dir(LABEL_STUDIO_VENV, work / "label-studio", label_studio_template)
    port = free_port()
    command = [tool_command(LABEL_STUDIO_VENV, "label-studio"), "start", "--no-browser", "--data-dir", str(data),
               "--internal-host", "127.0.0.1", "--port", str(port), "--username", EMAIL, "--password", PASSWORD]
    with serving([command], label_studio_env(data), data, f"http://127.0.0.1:{port}/health"):
        yield LabelStudio(f"http://127.0.0.1:{port}")
