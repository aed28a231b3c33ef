"""The studio's web application (FastAPI): the page, its assets, and a small JSON API.

The page and its script and style are files of this package, served from a fixed list; no
route serves a folder, and FastAPI's own documentation pages (which load scripts from the
internet) are switched off. Every response carries a Content-Security-Policy that lets the page
reach only the server it came from. Errors are JSON ``{"error": "one line"}`` with status 400
(413 for an upload over the limit, 404 for an unknown route); the server keeps running. A request
whose Host is not the server's own name (DNS rebinding) or that another site's page sends (its
Origin) is refused.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from generator.errors import GeneratorError
from generator.studio import session as studio_session

ASSETS = {
    "": ("index.html", "text/html; charset=utf-8"),
    "studio.js": ("studio.js", "text/javascript"),
    "studio.css": ("studio.css", "text/css"),
}
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


class MusicRequest(BaseModel):
    seed: str | None = Field(None, max_length=40)
    model: str = Field("auto", max_length=100)
    seconds: float = Field(10.0, gt=0, le=studio_session.MAX_SECONDS)
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    random_seed: int | None = Field(None, ge=0, lt=2**62)


class HarmonizeRequest(BaseModel):
    seed: str | None = Field(None, max_length=40)
    mode: str = Field("harmonize", pattern="^(harmonize|rewrite)$")
    start_beat: float = Field(0.0, ge=0, le=100_000)
    end_beat: float = Field(8.0, gt=0, le=100_000)
    temperature: float = Field(1.0, gt=0, le=10)
    iterations: int | None = Field(None, ge=1, le=2000)
    random_seed: int | None = Field(None, ge=0, lt=2**62)


class TextRequest(BaseModel):
    prompt: str = Field("", max_length=studio_session.MAX_PROMPT)
    checkpoint: str = Field("shakespeare", max_length=100)
    length: int = Field(400, ge=1, le=studio_session.MAX_TEXT_LENGTH)
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    random_seed: int | None = Field(None, ge=0, lt=2**62)


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(studio: studio_session.Studio, allowed_hosts=None) -> FastAPI:
    """The application for ``studio``; ``allowed_hosts`` (names the Host header may carry, None:
    any) keeps pages of other sites from reaching a loopback server through DNS rebinding."""
    app = FastAPI(title="generator studio", docs_url=None, redoc_url=None, openapi_url=None)
    add_guards(app, None if allowed_hosts is None else {h.lower() for h in allowed_hosts})
    add_page_routes(app, studio)
    add_seed_routes(app, studio)
    job_view = add_job_routes(app, studio)
    add_take_routes(app, studio, job_view)
    return app


def add_guards(app: FastAPI, hosts: set[str] | None) -> None:
    """The checks and headers of every request (Host, Origin, the security headers) and the JSON errors."""

    @app.middleware("http")
    async def guard(request: Request, call_next):
        host = (request.headers.get("host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if hosts is not None and host not in hosts:
            return error(f"this studio answers requests for {', '.join(sorted(hosts))} only", 403)
        origin = request.headers.get("origin")
        if request.method not in ("GET", "HEAD") and origin and urlsplit(origin).netloc != request.headers.get("host"):
            return error("the studio takes requests from its own page only", 403)  # another site's form or script
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(GeneratorError)
    async def bad_input(request: Request, e: GeneratorError):
        return error(str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, e: RequestValidationError):
        problems = []
        for item in e.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
            problems.append(f"{where}: {item.get('msg', 'invalid')}" if where else item.get("msg", "invalid"))
        return error("; ".join(problems)[:300] or "invalid request")

    @app.exception_handler(HTTPException)
    async def not_found(request: Request, e: HTTPException):
        return error(str(e.detail), e.status_code)


def add_page_routes(app: FastAPI, studio: studio_session.Studio) -> None:
    """The page, its assets and ``/api/info`` (the models, examples and limits the page shows)."""

    def asset(name: str) -> Response:
        filename, media = ASSETS[name]
        data = resources.files("generator.studio").joinpath("static", filename).read_bytes()
        return Response(data, media_type=media, headers={"Cache-Control": "no-cache"})

    @app.get("/")
    def page():
        return asset("")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in ASSETS or not name:
            return error(f"no such file: {name[:60]}", 404)
        return asset(name)

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    @app.get("/api/info")
    def info():
        return dict(
            models=[
                dict(name=k, modality=v["modality"], arch=v["arch"], kind=v["kind"], description=v["description"])
                for k, v in studio.models.items()
            ],
            examples=studio.examples,
            upload_limit=studio_session.UPLOAD_BYTES,
            max_seconds=studio_session.MAX_SECONDS,
            max_text=studio_session.MAX_TEXT_LENGTH,
        )


def add_seed_routes(app: FastAPI, studio: studio_session.Studio) -> None:
    """Uploading a seed and reading one back."""

    @app.post("/api/seeds")
    async def upload(request: Request):
        name = request.headers.get("x-filename", "upload")
        limit = studio_session.UPLOAD_BYTES
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error(f"{name[:120]} is larger than the {limit // (1024 * 1024)} MiB upload limit", 413)
        data = bytearray()
        async for piece in request.stream():
            data += piece
            if len(data) > limit:
                return error(f"{name[:120]} is larger than the {limit // (1024 * 1024)} MiB upload limit", 413)
        from urllib.parse import unquote

        from starlette.concurrency import run_in_threadpool

        def read():  # off the event loop: a score can take music21 seconds to parse
            return studio.seed_info(studio.upload(bytes(data), unquote(name)))

        return await run_in_threadpool(read)

    @app.get("/api/seeds/{seed_id}")
    def seed(seed_id: str):
        return studio.seed_info(studio.seed(seed_id))


def add_job_routes(app: FastAPI, studio: studio_session.Studio):
    """Starting music, harmonize and text jobs, following and cancelling them; returns ``job_view``
    (a job as the page reads it), which the take routes share."""

    def job_view(job) -> dict:
        take = studio.takes.get(job.take) if job.take else None
        return dict(
            id=job.id,
            kind=job.kind,
            state=job.state,
            stage=job.stage,
            progress=job.progress,
            position=studio.worker.position(job),
            error=job.error,
            text=job.text,
            take=dict(take.summary(), roll=take.roll) if take else None,
        )

    @app.post("/api/music")
    def music(body: MusicRequest):
        return job_view(studio.submit("music", body.model_dump()))

    @app.post("/api/harmonize")
    def harmonize(body: HarmonizeRequest):
        if body.mode == "rewrite" and body.end_beat <= body.start_beat:
            raise GeneratorError("the passage to rewrite must end after it starts (beats, from 0)")
        return job_view(studio.submit("harmonize", body.model_dump()))

    @app.post("/api/text")
    def text(body: TextRequest):
        return job_view(studio.submit("text", body.model_dump()))

    def job_of(job_id: str):
        job = studio.worker.jobs.get(job_id)
        if job is None:
            raise GeneratorError(f"no job {job_id[:40]!r} in this session")
        return job

    @app.get("/api/jobs/{job_id}")
    def job(job_id: str):
        return job_view(job_of(job_id))

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        job = job_of(job_id)
        studio.worker.cancel(job)
        return job_view(job)

    @app.get("/api/jobs/{job_id}/text.txt")
    def text_file(job_id: str):
        job = job_of(job_id)
        if job.kind != "text":
            raise GeneratorError("that job made music, not text")
        return Response(
            job.text,
            media_type="text/plain; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="text-{job.id}.txt"'},
        )

    return job_view


def add_take_routes(app: FastAPI, studio: studio_session.Studio, job_view) -> None:
    """The session's takes: listing, files, a take as the next seed, and another take with its settings."""

    @app.get("/api/takes")
    def takes():
        return [t.summary() for t in studio.takes.values()]

    @app.get("/api/takes/{take_id}")
    def take(take_id: str):
        found = studio.take(take_id)
        return dict(found.summary(), roll=found.roll)

    @app.get("/api/takes/{take_id}/{filename}")
    def take_file(take_id: str, filename: str):
        found = studio.take(take_id)
        media = {"take.mid": "audio/midi", "take.wav": "audio/wav"}.get(filename)
        if media is None:
            return error(f"a take has take.mid and take.wav, not {filename[:60]}", 404)
        path = studio.inside(found.folder / filename)
        download = f"take-{found.number}-{found.checkpoint}{path.suffix}"
        return FileResponse(path, media_type=media, filename=download)

    @app.post("/api/takes/{take_id}/seed")
    def take_as_seed(take_id: str):
        return studio.seed_info(studio.seed_from_take(studio.take(take_id)))

    @app.post("/api/takes/{take_id}/regenerate")
    def regenerate(take_id: str):
        found = studio.take(take_id)
        settings = dict(found.settings, random_seed=None)
        return job_view(studio.submit("music" if found.kind == "continue" else "harmonize", settings))
