"""`vistrain review`: a local page that walks the audit's queue, one image at a time, with keyboard shortcuts:
keep, exclude, relabel. Every decision is saved at once, atomically, to the decisions file (`data/decisions.py`);
reloading the page shows the decisions made. Served by FastAPI on 127.0.0.1, like `serve`; only the queue's own
images can be fetched, by their index in the queue.

A relabel names one of the data's classes (multi-label: its labels; regression: numbers), or a new class only when
the request says so on purpose (the page's "new class" button), and then a name that makes a folder
(`vistrain.data.names.new_class_problem`). A request body over MAX_BODY bytes is refused (413) unread."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ValidationError

from vistrain.analysis.audit import Audit
from vistrain.core.html import render
from vistrain.data.datasets import parse_label
from vistrain.data.decisions import ACTIONS, Decisions
from vistrain.data.images import UnreadableImage, jpeg_thumbnail
from vistrain.data.names import new_class_problem
from vistrain.data.samples import SINGLE_LABEL, DataError

IMAGE_SIDE = 512  # pixels, the longer side of the images shown
MAX_BODY = 16_384  # bytes of a decision request


class DecisionRequest(BaseModel):
    index: int
    action: str
    label: str = ""
    new_class: bool = False  # the label is a class the data does not have yet, added on purpose


def relabel_problem(result: Audit, label: str, new_class: bool) -> str | None:
    """Why `label` cannot be a relabel of one of `result`'s images, or None: it must name the data's classes (see
    `parse_label`), or be a new class on purpose (single-label tasks) with a name that makes a folder."""
    if new_class:
        if result.task not in SINGLE_LABEL:
            return "new classes are for single-label tasks"
        problem = new_class_problem(label)
        return f"a new class {problem}" if problem else None
    try:
        parse_label(label, result.task, result.classes, "the label")
    except DataError as error:
        return str(error)
    return None


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None when it is over `limit` bytes (declared so, or as it comes)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return body


def queue(result: Audit, decisions: Decisions) -> list[dict]:
    """The findings as the page shows them, each with the decision already made for its image, if any."""
    rows = []
    for index, f in enumerate(result.findings):
        decision = decisions.get(f.file)
        rows.append({"index": index, "name": f.file.name, "path": str(f.file), "given": f.given,
                     "suggested": f.suggested, "kind": f.kind, "score": round(f.score, 4), "detail": f.detail,
                     "split": f.split, "decision": None if decision is None else
                     {"action": decision.action, "label": decision.label}})
    return rows


def create_review_app(result: Audit, decisions: Decisions, source: str) -> FastAPI:
    """The review page for `result`'s queue, writing to `decisions`."""
    app = FastAPI(title="vistrain review", docs_url=None, redoc_url=None, openapi_url=None)
    classes = result.classes if result.task in SINGLE_LABEL else []

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return render("review.html.j2", source=source, task=result.task, classes=classes,
                      decisions_file=str(decisions.path), items=queue(result, decisions), actions=ACTIONS)

    @app.get("/image/{index}")
    def image(index: int) -> Response:
        if not 0 <= index < len(result.findings):
            return JSONResponse({"error": "no such image in the queue"}, status_code=404)
        try:
            return Response(jpeg_thumbnail(result.findings[index].file, IMAGE_SIDE, quality=88),
                            media_type="image/jpeg")
        except (UnreadableImage, OSError) as error:
            return JSONResponse({"error": str(error)}, status_code=410)

    @app.get("/decisions")
    def current() -> list[dict]:
        return queue(result, decisions)

    @app.post("/decision")
    async def decide(request: Request) -> JSONResponse:
        body = await read_body(request, MAX_BODY)
        if body is None:
            return JSONResponse({"error": f"a decision is at most {MAX_BODY:,} bytes"}, status_code=413,
                                headers={"Connection": "close"})
        try:
            wanted = DecisionRequest.model_validate_json(body)
        except ValidationError as error:
            return JSONResponse({"error": f"not a decision: {error.errors()[0]['msg']}"}, status_code=400)
        if not 0 <= wanted.index < len(result.findings):
            return JSONResponse({"error": "no such image in the queue"}, status_code=404)
        problem = relabel_problem(result, wanted.label, wanted.new_class) if wanted.action == "relabel" else None
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        try:
            decisions.decide(result.findings[wanted.index].file, wanted.action, wanted.label)
        except DataError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(queue(result, decisions)[wanted.index])

    return app
