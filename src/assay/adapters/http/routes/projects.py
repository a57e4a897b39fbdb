"""Projects: the top of the hierarchy; everything else lives in one."""

from __future__ import annotations

from assay.adapters.http._routing import (
    CURSOR,
    LIMIT,
    NO_BODY,
    Call,
    JsonBody,
    PatchBody,
    Route,
)
from assay.engine import Page, Project, ProjectSpec

TAG = "projects"
BASE = "/api/v1/projects"


async def list_projects(call: Call) -> Page[Project]:
    return await call.service.list_projects(
        call.key, cursor=call.text("cursor"), limit=call.integer("limit")
    )


async def create_project(call: Call) -> Project:
    return await call.service.create_project(call.key, call.body)


async def get_project(call: Call) -> Project:
    return await call.service.get_project(call.key, call.path["key"])


async def update_project(call: Call) -> Project:
    return await call.service.update_project(
        call.key, call.path["key"], call.body, expected_revision=call.expected_revision
    )


async def archive_project(call: Call) -> Project:
    return await call.service.set_project_archived(call.key, call.path["key"], True)


async def restore_project(call: Call) -> Project:
    return await call.service.set_project_archived(call.key, call.path["key"], False)


ROUTES = (
    Route(
        method="GET",
        path=BASE,
        endpoint=list_projects,
        operation_id="listProjects",
        summary="List projects",
        description="A key scoped to a project sees only its own.",
        tag=TAG,
        query=(CURSOR, LIMIT),
        response=Page[Project],
    ),
    Route(
        method="POST",
        path=BASE,
        endpoint=create_project,
        operation_id="createProject",
        summary="Create a project",
        description="Needs an ADMIN key not scoped to a project.",
        tag=TAG,
        body=JsonBody(
            ProjectSpec,
            example={"key": "shop", "name": "Web shop", "description": "The storefront"},
        ),
        status=201,
        response=Project,
    ),
    Route(
        method="GET",
        path=f"{BASE}/{{key}}",
        endpoint=get_project,
        operation_id="getProject",
        summary="Get a project",
        tag=TAG,
        response=Project,
    ),
    Route(
        method="PATCH",
        path=f"{BASE}/{{key}}",
        endpoint=update_project,
        operation_id="updateProject",
        summary="Change a project's name or description",
        description="The body's fields replace the current ones; the key cannot change.",
        tag=TAG,
        body=PatchBody(ProjectSpec, example={"name": "Web shop (EU)"}),
        if_match=True,
        response=Project,
    ),
    Route(
        method="POST",
        path=f"{BASE}/{{key}}/archive",
        endpoint=archive_project,
        operation_id="archiveProject",
        summary="Archive a project",
        description="An archived project rejects writes to its flags, experiments, layers "
        "and metrics until it is restored.",
        tag=TAG,
        body=NO_BODY,
        response=Project,
    ),
    Route(
        method="POST",
        path=f"{BASE}/{{key}}/restore",
        endpoint=restore_project,
        operation_id="restoreProject",
        summary="Restore an archived project",
        tag=TAG,
        body=NO_BODY,
        response=Project,
    ),
)
