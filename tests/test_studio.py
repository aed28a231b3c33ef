"""The studio's server (generator.studio) through FastAPI's TestClient: bad input, files, queue, cancel.

The page itself, in a real browser, is tests/test_studio_browser.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import music21
import pytest

pytest.importorskip("fastapi", reason='the studio extra is not installed (pip install ".[studio]")')
pytest.importorskip("httpx", reason='FastAPI\'s TestClient needs httpx (pip install ".[studio-test]")')

from fastapi.testclient import TestClient  # noqa: E402

from generator.studio import session as studio_session  # noqa: E402
from generator.studio.app import create_app  # noqa: E402

TEST_MIDI = Path(music21.__file__).parent / "midi" / "testPrimitive"


@pytest.fixture(scope="module")
def studio(tmp_path_factory, music_run, text_run):
    root = tmp_path_factory.mktemp("studio")
    s = studio_session.Studio(root / "work", [music_run, text_run])
    yield s
    s.worker.stop()


@pytest.fixture(scope="module")
def client(studio):
    return TestClient(create_app(studio))


def upload(client, data: bytes, name: str):
    return client.post("/api/seeds", content=data, headers={"X-Filename": name})


def wait(client, job: dict, states=("done", "failed", "cancelled"), seconds: float = 60.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job['id']}").json()
        if job["state"] in states:
            return job
        time.sleep(0.05)
    raise AssertionError(f"job still {job['state']} after {seconds} s")


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def test_the_page_and_its_assets_come_from_the_package_and_point_nowhere_else(client):
    page = client.get("/")
    assert page.status_code == 200 and "generator studio" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("studio.js", "studio.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert "http://" not in asset.text and "https://" not in asset.text, name
    assert "http" not in page.text.replace("http-equiv", "")
    for docs in ("/docs", "/redoc", "/openapi.json"):  # FastAPI's own pages load scripts from the internet
        assert client.get(docs).status_code == 404


def test_info_lists_models_examples_and_the_upload_limit(client):
    info = client.get("/api/info").json()
    names = {m["name"]: m for m in info["models"]}
    assert names["music"]["modality"] == "music" and names["text"]["modality"] == "text"
    assert "pop-piano" in names and "harmonizer" in names
    assert {e["id"] for e in info["examples"]} >= {"example-melody"}
    assert info["upload_limit"] == studio_session.UPLOAD_BYTES


@pytest.mark.parametrize(
    "data, name, status, words",
    [
        (b"not music at all", "notes.txt", 400, "not a score file"),
        (b"MThd garbage", "broken.mid", 400, "could not be read as music"),
        (b"", "empty.mid", 400, "is empty"),
        (b"\0" * (studio_session.UPLOAD_BYTES + 1), "huge.mid", 413, "MiB upload limit"),
    ],
)
def test_bad_uploads_get_one_message_and_the_server_keeps_running(client, studio, data, name, status, words):
    before = files_under(studio.workdir / "seeds")
    response = upload(client, data, name)
    assert response.status_code == status and words in response.json()["error"]
    assert files_under(studio.workdir / "seeds") == before  # nothing left behind
    assert client.get("/api/info").status_code == 200


def test_bad_settings_are_a_message_not_a_traceback(client):
    for body, words in (
        ({"seconds": -1}, "seconds"),
        ({"temperature": "hot"}, "temperature"),
        ({"model": "no-such-model", "seed": None}, "no model"),
        ({"seed": "0123456789ab"}, "no seed"),
    ):
        response = client.post("/api/music", json=body)
        if response.status_code == 200:  # an unknown model is found by the worker: the job fails with it
            response = wait(client, response.json())
            assert response["state"] == "failed" and words in response["error"]
        else:
            assert response.status_code == 400 and words in response.json()["error"], response.text
    response = client.post("/api/text", json={"checkpoint": "music", "length": 5})
    assert wait(client, response.json())["error"] == "music is a music model, not a text model"


def test_path_traversal_reaches_no_file_outside_the_working_folder(client, studio, tmp_path):
    secret = studio.workdir.parent / "secret.mid"
    secret.write_bytes((TEST_MIDI / "test05.mid").read_bytes())
    outside = files_under(studio.workdir.parent) - files_under(studio.workdir)
    for url in (
        "/static/../../secret.mid",
        "/static/..%2f..%2fsecret.mid",
        "/static/%2e%2e/pyproject.toml",
        "/api/takes/..%2f..%2fsecret/take.mid",
        "/api/takes/../../secret.mid",
        "/api/seeds/..%2f..%2fsecret.mid",
        "/api/seeds/../secret",
        "/api/jobs/..%2f..%2fsecret/text.txt",
    ):
        response = client.get(url)
        assert response.status_code in (400, 404), url
        assert response.content[:4] != b"MThd", url
    # an upload named like a path lands in seeds/ under a name of the server's own
    response = upload(client, (TEST_MIDI / "test05.mid").read_bytes(), "../../../escaped.mid")
    assert response.status_code == 200 and response.json()["name"] == "escaped.mid"
    assert not (studio.workdir.parent / "escaped.mid").exists()
    assert files_under(studio.workdir.parent) - files_under(studio.workdir) == outside
    seed = next(s for s in studio.seeds.values() if s.name == "escaped.mid")
    assert seed.path.parent == studio.workdir / "seeds" and seed.path.name == f"{seed.id}.mid"
    with pytest.raises(Exception, match="outside the studio's working folder"):
        studio.inside(secret)


def test_continue_a_seed_keep_the_take_download_it_and_regenerate(client, studio):
    seed = upload(client, (TEST_MIDI / "test05.mid").read_bytes(), "test05.mid").json()
    assert seed["model"] == "pop-piano" and "piano only" in seed["reason"] and seed["roll"]["notes"]
    job = client.post("/api/music", json={"seed": seed["id"], "model": "music", "seconds": 2, "random_seed": 3}).json()
    job = wait(client, job)
    assert job["state"] == "done", job["error"]
    take = job["take"]
    assert take["settings"]["random_seed"] == 3 and take["checkpoint"] == "music"
    flags = {n[5] for n in take["roll"]["notes"]}
    assert flags == {0, 1}  # seed and continuation told apart
    midi = client.get(take["midi"])
    assert midi.status_code == 200 and midi.content[:4] == b"MThd"
    assert "take-" in midi.headers["content-disposition"]
    wav = client.get(take["wav"])
    assert wav.status_code == 200 and wav.content[:4] == b"RIFF" and len(wav.content) > 1000
    assert client.get(f"/api/takes/{take['id']}/other.txt").status_code == 404
    again = wait(client, client.post(f"/api/takes/{take['id']}/regenerate").json())
    assert again["state"] == "done" and again["take"]["number"] == take["number"] + 1
    assert again["take"]["settings"]["seconds"] == 2 and again["take"]["settings"]["random_seed"] != 3
    assert [t["id"] for t in client.get("/api/takes").json()][-2:] == [take["id"], again["take"]["id"]]
    onward = client.post(f"/api/takes/{take['id']}/seed").json()  # continue the take further
    assert onward["name"] == f"take-{take['number']}.mid" and len(onward["roll"]["notes"]) == len(take["roll"]["notes"])


def test_two_requests_are_queued_not_mixed_and_a_long_one_can_be_cancelled(client):
    long = client.post("/api/music", json={"model": "music", "seconds": 300, "random_seed": 1}).json()
    queued = client.post(
        "/api/text", json={"checkpoint": "text", "prompt": "To be", "length": 300, "random_seed": 1}
    ).json()
    long = wait(client, long, states=("running",))
    assert client.get(f"/api/jobs/{queued['id']}").json()["position"] == 1  # waits for the long one
    time.sleep(0.5)
    running = client.get(f"/api/jobs/{long['id']}").json()  # progress None: no count yet (loading, compiling)
    assert running["state"] == "running" and (running["progress"] is None or running["progress"] < 1)
    client.post(f"/api/jobs/{long['id']}/cancel")
    assert wait(client, long)["state"] == "cancelled"
    text = wait(client, queued)
    assert text["state"] == "done" and text["text"].startswith("To be") and 5 < len(text["text"]) <= 305
    download = client.get(f"/api/jobs/{text['id']}/text.txt")
    assert download.text == text["text"] and "attachment" in download.headers["content-disposition"]


def test_harmonize_the_melody_and_rewrite_a_passage(client):
    melody = wait(
        client, client.post("/api/harmonize", json={"seed": "example-melody", "iterations": 2, "random_seed": 1}).json()
    )
    assert melody["state"] == "done", melody["error"]
    tracks = {n[3] for n in melody["take"]["roll"]["notes"]}
    assert len(tracks) == 4 and {n[5] for n in melody["take"]["roll"]["notes"] if n[3] == 0} == {0}
    rewrite = wait(
        client,
        client.post(
            "/api/harmonize",
            json={
                "seed": "example-chorale",
                "mode": "rewrite",
                "start_beat": 4,
                "end_beat": 8,
                "iterations": 2,
                "random_seed": 1,
            },
        ).json(),
    )
    assert rewrite["state"] == "done", rewrite["error"]
    assert rewrite["take"]["kind"] == "rewrite" and {n[5] for n in rewrite["take"]["roll"]["notes"]} == {0, 1}
    [(low, high)] = rewrite["take"]["roll"]["marks"]  # the passage, in seconds
    assert all(low - 1e-3 <= n[1] < high for n in rewrite["take"]["roll"]["notes"] if n[5])
    bad = client.post(
        "/api/harmonize", json={"seed": "example-chorale", "mode": "rewrite", "start_beat": 8, "end_beat": 4}
    )
    assert bad.status_code == 400 and "end after it starts" in bad.json()["error"]


def test_requests_for_another_host_name_or_from_another_site_are_refused(studio):
    local = TestClient(create_app(studio, allowed_hosts={"127.0.0.1", "localhost"}), base_url="http://127.0.0.1")
    assert local.get("/api/info").status_code == 200
    rebound = TestClient(create_app(studio, allowed_hosts={"127.0.0.1", "localhost"}), base_url="http://evil.example")
    assert rebound.get("/api/info").status_code == 403
    other_site = local.post("/api/music", json={"seconds": 1}, headers={"Origin": "http://evil.example"})
    assert other_site.status_code == 403 and "its own page" in other_site.json()["error"]


def test_the_command_refuses_a_busy_port_a_bad_host_and_a_file_as_workdir(tmp_path, capsys):
    import socket

    from conftest import call, one_line_error
    from generator.cli.main import generator_main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        one_line_error(
            *call(generator_main, ["studio", "--port", str(port)], capsys)[::2],
            f"127.0.0.1:{port}",
            "choose another --port",
        )
    one_line_error(*call(generator_main, ["studio", "--host", "no.such.host.invalid"], capsys)[::2], "cannot listen")
    one_line_error(*call(generator_main, ["studio", "--port", "70000"], capsys)[::2], "--port")
    afile = tmp_path / "file"
    afile.write_text("x")
    one_line_error(*call(generator_main, ["studio", "--workdir", str(afile)], capsys)[::2], "is a file")


def test_listening_beyond_the_loopback_address_is_announced_loudly():
    from generator.studio import exposure_warning

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_warning(host, 8765) is None
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        assert exposure_warning(host, 8765).startswith(f"WARNING: the studio listens on {host}")


def test_audio_renders_in_a_child_process_that_a_cancel_stops(tmp_path):
    from generator.studio.jobs import Cancelled, Job
    from generator.studio.session import render_wav

    midi = tmp_path / "take.mid"
    midi.write_bytes((TEST_MIDI / "test05.mid").read_bytes())
    job = Job("music", None)
    how = render_wav(job, midi)
    assert "synthesis" in how or "FluidSynth" in how
    assert (tmp_path / "take.wav").read_bytes()[:4] == b"RIFF"
    job.cancel.set()
    with pytest.raises(Cancelled):
        render_wav(job, midi)
    broken = tmp_path / "broken.mid"
    broken.write_bytes(b"MThd nonsense")
    assert render_wav(Job("music", None), broken).startswith("no audio: ")


def test_without_the_studio_extra_the_command_says_what_to_install(monkeypatch, capsys):
    import sys

    from conftest import call, one_line_error
    from generator.cli.main import generator_main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    one_line_error(*call(generator_main, ["studio"], capsys)[::2], "needs uvicorn", 'pip install ".[studio]"')
