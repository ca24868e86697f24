"""The review station web app (FastAPI, server-rendered Jinja2 templates, one small script).

Pages: ``/login``; ``/`` the queue of unreviewed kept frames, newest first, with filters;
``/frames/{frame_id}`` one frame with its overlay, score, type, regions, thresholds and prompt
version, and the decision forms; ``/proposals`` (engineers) proposed defect types to accept or
reject; ``/versions`` (engineers) prompt versions to activate. Every POST needs a logged-in session
and its CSRF token; decisions and activations also need a one-time form token (replays are
refused). Everything shown goes through Jinja's autoescaping.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.middleware.sessions import SessionMiddleware

from qc_stream.domain.defects import name_key, validate_defect_type
from qc_stream.errors import InputError, QcError
from qc_stream.review.passwords import verify_password
from qc_stream.review.security import FormTokens, LoginLimiter, new_csrf, same_token
from qc_stream.settings import Settings
from qc_stream.storage.frame_store import FrameStore, FrameStoreError
from qc_stream.storage.reviews import QUEUE_FILTERS, VERDICTS, ReviewRepository, UserRepository

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
# What a frame id in a URL may look like; anything else is refused before any lookup.
FRAME_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")
TIME_WINDOWS = {
    "": None,
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; script-src 'self'; "
    "style-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


class NeedLogin(Exception):
    pass


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def engineer(self) -> bool:
        return self.role == "engineer"


def create_app(
    settings: Settings,
    *,
    engine=None,
    registry_factory=None,
    versions_factory=None,
) -> FastAPI:
    """The app; ``engine`` defaults to ``QC_DATABASE_URL``; ``registry_factory()`` gives the
    ``DefectRegistry`` an accepted proposal is added to (default: from settings, publishing on
    qc.defect-types); ``versions_factory()`` the ``PromptVersions`` that lists and activates
    prompt versions (default: from settings, as `qc-stream models`, announcing on
    qc.model-updates)."""
    from qc_stream.storage.db import make_engine

    engine = engine or make_engine(settings.database_url)
    reviews = ReviewRepository(engine)
    users = UserRepository(engine)
    store = FrameStore(settings.frame_store_dir or Path("frames"))
    secret = settings.review_secret or secrets.token_urlsafe(32)
    forms = FormTokens(secret)
    limiter = LoginLimiter(settings.review_login_attempts)
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True)
    )

    def registry():
        if registry_factory is not None:
            return registry_factory()
        from qc_stream.registry.service import DefectRegistry

        return DefectRegistry.from_settings(settings)

    def prompt_versions():
        if versions_factory is not None:
            return versions_factory()
        from qc_stream.registry.versions import PromptVersions

        return PromptVersions.from_settings(settings)

    app = FastAPI(title="qc-stream review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        SessionMiddleware,
        secret_key=secret,
        session_cookie="qc_review",
        max_age=12 * 3600,
        same_site="strict",
    )

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin):
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse("log in first", status_code=401)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return page(request, "message.html", {"message": exc.message}, status=exc.status)

    def csrf(request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = new_csrf()
        return token

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200):
        context = {"csrf": csrf(request), "user": context.get("user"), **context}
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    def current_user(request: Request) -> User:
        name = request.session.get("user")
        row = users.get(name) if name else None
        if row is None or row.disabled:
            request.session.pop("user", None)
            raise NeedLogin()
        return User(row.name, row.role)

    async def form_of(request: Request) -> dict[str, str]:
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        if not same_token(data.get("csrf"), request.session.get("csrf")):
            raise Refused(403, "The form's security token is missing or wrong; reload the page.")
        return data

    def frame_id_of(raw: str) -> str:
        if not FRAME_ID.match(raw) or ".." in raw:
            raise Refused(404, "Not a frame id.")
        return raw

    def filters_of(params) -> dict[str, str]:
        out = {k: str(params.get(k, ""))[:128] for k in (*QUEUE_FILTERS, "window")}
        if out["window"] not in TIME_WINDOWS:
            out["window"] = ""
        return {k: v for k, v in out.items() if v}

    def queue_for(filters: dict[str, str], limit: int = 50):
        window = TIME_WINDOWS[filters.get("window", "")]
        since = datetime.now(UTC) - window if window else None
        cols = {k: v for k, v in filters.items() if k in QUEUE_FILTERS}
        return reviews.queue(filters=cols, since=since, limit=limit)

    # --- pages ---
    @app.get("/healthz")
    def healthz():
        return PlainTextResponse("ok")

    @app.get("/readyz")
    def readyz():
        from sqlalchemy import text

        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1 FROM reviews LIMIT 1"))
        except Exception as e:
            return PlainTextResponse(f"database not ready: {type(e).__name__}", status_code=503)
        return PlainTextResponse("ready")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in ("review.js", "review.css"):
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(HERE / "static" / name)

    @app.get("/login")
    def login_page(request: Request):
        return page(request, "login.html", {"error": None})

    @app.post("/login")
    async def login(request: Request):
        data = await form_of(request)
        name = data.get("name", "").strip()[:64]
        client = request.client.host if request.client else "?"
        if limiter.blocked(name, client):
            return page(
                request,
                "login.html",
                {"error": "Too many failed logins; wait a minute and try again."},
                status=429,
            )
        row = users.get(name) if name else None
        ok = verify_password(row.password_hash if row else None, data.get("password", ""))
        if not ok or row is None or row.disabled:
            limiter.failed(name, client)
            return page(request, "login.html", {"error": "Wrong user name or password."}, 401)
        limiter.succeeded(name, client)
        request.session.clear()
        request.session["user"] = row.name
        request.session["csrf"] = new_csrf()  # a fresh token per login
        return RedirectResponse("/", status_code=303)

    @app.post("/logout")
    async def logout(request: Request):
        await form_of(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    @app.get("/")
    def queue(request: Request):
        user = current_user(request)
        filters = filters_of(request.query_params)
        items, total = queue_for(filters)
        return page(
            request,
            "queue.html",
            {
                "user": user,
                "items": items,
                "total": total,
                "filters": filters,
                "choices": reviews.filter_values(),
                "windows": [w for w in TIME_WINDOWS if w],
                "query": urlencode(filters),
            },
        )

    @app.get("/frames/{frame_id}")
    def item(request: Request, frame_id: str):
        user = current_user(request)
        frame_id = frame_id_of(frame_id)
        detail = reviews.detail(frame_id)
        if detail is None:
            raise Refused(404, f"No kept frame {frame_id}.")
        filters = filters_of(request.query_params)
        problem = None
        try:
            store.resolve(detail.retained.path)
        except FrameStoreError as e:
            problem = str(e)
        from qc_stream.storage.defect_types import DefectTypeRepository

        types = [d.name for d in DefectTypeRepository(engine).list(detail.inspection.product)]
        _, left = queue_for(filters, limit=1)
        return page(
            request,
            "item.html",
            {
                "user": user,
                "d": detail,
                "i": detail.inspection,
                "thresholds": detail.retained.thresholds,
                "types": types,
                "verdicts": VERDICTS,
                "form_token": forms.issue(frame_id, user.name),
                "query": urlencode(filters),
                "problem": problem,
                "left": left,
            },
        )

    def frame_file(frame_id: str, overlay: bool):
        detail = reviews.detail(frame_id_of(frame_id))
        if detail is None:
            return PlainTextResponse("no such kept frame", status_code=404)
        rel = detail.retained.overlay_path if overlay else detail.retained.path
        if rel is None:
            return PlainTextResponse("no overlay for this frame", status_code=404)
        try:
            return FileResponse(store.resolve(rel), headers={"Cache-Control": "private"})
        except FrameStoreError as e:
            return PlainTextResponse(str(e), status_code=404)

    @app.get("/frames/{frame_id}/image")
    def image(request: Request, frame_id: str):
        current_user(request)
        return frame_file(frame_id, overlay=False)

    @app.get("/frames/{frame_id}/overlay")
    def overlay(request: Request, frame_id: str):
        current_user(request)
        return frame_file(frame_id, overlay=True)

    @app.post("/frames/{frame_id}/decide")
    async def decide(request: Request, frame_id: str):
        user = current_user(request)
        frame_id = frame_id_of(frame_id)
        data = await form_of(request)
        why = forms.consume(data.get("form_token", ""), frame_id, user.name)
        if why:
            raise Refused(409, f"Decision not saved: {why}.")
        detail = reviews.detail(frame_id)
        if detail is None:
            raise Refused(404, f"No kept frame {frame_id}.")
        i = detail.inspection
        action = data.get("action", "")
        if action == "confirm":
            verdict, defect_type = i.verdict, i.defect_type
        elif action == "verdict":
            verdict = data.get("verdict", "")
            if verdict not in VERDICTS:
                raise Refused(400, "Unknown verdict.")
            defect_type = i.defect_type
        elif action == "type":
            verdict = i.verdict if i.verdict != "ok" else "reject"
            defect_type = type_of(data, i.product, user)
        else:
            raise Refused(400, "Unknown action.")
        reviews.decide(frame_id, user.name, verdict=verdict, defect_type=defect_type, action=action)
        filters = filters_of(_parse_query(data.get("query", "")))
        nxt, _ = queue_for(filters, limit=1)
        query = urlencode(filters)
        target = f"/frames/{nxt[0].frame_id}" if nxt else "/"
        return RedirectResponse(f"{target}?{query}" if query else target, status_code=303)

    def type_of(data: dict[str, str], product: str, user: User) -> str:
        new = data.get("new_type", "").strip()
        if new:
            try:
                spec = validate_defect_type(product, new)
            except QcError as e:
                raise Refused(400, f"Cannot propose that type: {e}") from None
            from qc_stream.storage.defect_types import DefectTypeRepository

            known = {name_key(d.name): d.name for d in DefectTypeRepository(engine).list(product)}
            if name_key(spec.name) in known:
                return known[name_key(spec.name)]
            reviews.propose(product, spec.name, user.name)
            return spec.name
        chosen = data.get("defect_type", "")
        from qc_stream.storage.defect_types import DefectTypeRepository

        known = {d.name for d in DefectTypeRepository(engine).list(product)}
        if chosen not in known:
            raise Refused(400, "Choose a registered defect type or propose a new one.")
        return chosen

    @app.get("/export.zip")
    def export_zip(request: Request):
        """Engineers: the reviewed frames as a zip in the `retrain --examples` layout."""
        user = current_user(request)
        if not user.engineer:
            raise Refused(403, "Only engineers export reviewed frames.")
        import shutil
        import tempfile

        from starlette.background import BackgroundTask

        from qc_stream.review.export import export_reviewed
        from qc_stream.storage.defect_types import DefectTypeRepository

        work = Path(tempfile.mkdtemp(prefix="qc-review-export-"))
        try:
            export_reviewed(reviews, DefectTypeRepository(engine).list(), store, work / "examples")
            (work / "examples").mkdir(exist_ok=True)
            archive = shutil.make_archive(str(work / "reviewed"), "zip", work / "examples")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        return FileResponse(
            archive,
            media_type="application/zip",
            filename="reviewed-examples.zip",
            background=BackgroundTask(shutil.rmtree, work, True),
        )

    @app.get("/proposals")
    def proposals(request: Request):
        user = current_user(request)
        if not user.engineer:
            raise Refused(403, "Only engineers accept proposed defect types.")
        return page(request, "proposals.html", {"user": user, "rows": reviews.proposals()})

    @app.post("/proposals/{proposal_id}/{decision}")
    async def decide_proposal(request: Request, proposal_id: str, decision: str):
        user = current_user(request)
        await form_of(request)
        if not user.engineer:
            raise Refused(403, "Only engineers accept proposed defect types.")
        if not proposal_id.isdigit() or decision not in ("accept", "reject"):
            raise Refused(404, "No such proposal.")
        row = reviews.proposal(int(proposal_id))
        if row is None or row.status != "pending":
            raise Refused(404, "No such pending proposal.")
        if decision == "accept":
            try:
                change = registry().add(row.product, row.name, f"proposed by {row.proposed_by}")
            except InputError as e:
                raise Refused(400, f"Cannot add {row.name}: {e}") from None
            if not change.published:
                log.warning(
                    "defect type %s added but not published: %s", row.name, change.publish_error
                )
        reviews.decide_proposal(
            row.id, "accepted" if decision == "accept" else "rejected", user.name
        )
        return RedirectResponse("/proposals", status_code=303)

    def versions_page(request: Request, user: User, *, notice=None, error=None, status=200):
        try:
            with prompt_versions() as versions:
                rows = versions.list()
        except QcError as e:  # e.g. the database is down: say so on the page
            rows, error, status = [], f"Cannot list prompt versions: {e}", 503
        tokens = {
            r.prompt_version: forms.issue(f"version:{r.prompt_version}", user.name) for r in rows
        }
        context = {"user": user, "rows": rows, "tokens": tokens, "notice": notice, "error": error}
        return page(request, "versions.html", context, status=status)

    @app.get("/versions")
    def versions(request: Request):
        user = current_user(request)
        if not user.engineer:
            raise Refused(403, "Only engineers activate prompt versions.")
        return versions_page(request, user, notice=request.session.pop("notice", None))

    @app.post("/versions/activate")
    async def activate_version(request: Request):
        """As `qc-stream models activate VERSION`: the same PromptVersions.activate (which refuses
        a version made for another backbone, changing nothing) and the same announcement."""
        user = current_user(request)
        data = await form_of(request)
        if not user.engineer:
            raise Refused(403, "Only engineers activate prompt versions.")
        from starlette.concurrency import run_in_threadpool

        # Loading the backbone and waiting for the broker block: off the event loop.
        return await run_in_threadpool(activate_now, request, user, data)

    def activate_now(request: Request, user: User, data: dict[str, str]):
        version = data.get("version", "")[:200]
        with prompt_versions() as versions:
            if version not in {r.prompt_version for r in versions.list()}:
                raise Refused(404, f"No prompt version {version}.")
            why = forms.consume(data.get("form_token", ""), f"version:{version}", user.name)
            if why:
                raise Refused(409, f"Not activated: {why}.")
            try:
                outcome = versions.activate(version)
            except QcError as e:
                log.warning("prompt version %s not activated by %s: %s", version, user.name, e)
                error = f"Not activated: {e}"
                return versions_page(request, user, error=error, status=409)
        log.info("%s activated prompt version %s: %s", user.name, version, outcome.message)
        request.session["notice"] = outcome.message
        return RedirectResponse("/versions", status_code=303)

    return app


def _parse_query(text: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(text[:2000]))
