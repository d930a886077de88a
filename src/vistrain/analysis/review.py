"""`vistrain review`: a local page that walks the audit's queue, one image at a time, with keyboard shortcuts:
keep, exclude, relabel. Every decision is saved at once, atomically, to the decisions file (`data/decisions.py`);
reloading the page shows the decisions made. Served by FastAPI on 127.0.0.1, like `serve`; only the queue's own
images can be fetched."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from vistrain.analysis.audit import Audit
from vistrain.core.html import render
from vistrain.data.decisions import ACTIONS, Decisions
from vistrain.data.images import UnreadableImage, jpeg_thumbnail
from vistrain.data.samples import SINGLE_LABEL, DataError

IMAGE_SIDE = 512  # pixels, the longer side of the images shown


class DecisionRequest(BaseModel):
    index: int
    action: str
    label: str = ""


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
    def decide(request: DecisionRequest) -> JSONResponse:
        if not 0 <= request.index < len(result.findings):
            return JSONResponse({"error": "no such image in the queue"}, status_code=404)
        try:
            decisions.decide(result.findings[request.index].file, request.action, request.label)
        except DataError as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(queue(result, decisions)[request.index])

    return app
