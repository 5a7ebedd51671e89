"""Read-only routes about the work itself: the jobs and the speed model.

    GET /distributed/jobs            the latest distributed jobs
    GET /distributed/jobs/{job_id}   one job: mode, shares, who rendered each, attempts, timing
    GET /distributed/speeds          seconds per share and relative speed, per workflow
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from .access import AccessPolicy
from .errors import error_response


class JobView(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class JobSource(Protocol):
    def jobs(self) -> list[Any]: ...

    def job(self, job_id: str) -> JobView | None: ...


class SpeedSource(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


def add_job_routes(routes: web.RouteTableDef, policy: AccessPolicy, jobs: JobSource, speeds: SpeedSource) -> None:
    reader = policy.reader

    @routes.get("/distributed/speeds")
    @reader
    async def list_speeds(request: web.Request) -> web.Response:
        return web.json_response(speeds.snapshot())

    @routes.get("/distributed/jobs")
    @reader
    async def list_jobs(request: web.Request) -> web.Response:
        return web.json_response({"jobs": [job.snapshot() for job in jobs.jobs()]})

    @routes.get("/distributed/jobs/{job_id}")
    @reader
    async def get_job(request: web.Request) -> web.Response:
        job = jobs.job(request.match_info["job_id"])
        if job is None:
            return error_response(404, f"no job with id '{request.match_info['job_id']}'")
        return web.json_response(job.snapshot())
