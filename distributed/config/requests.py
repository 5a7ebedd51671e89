"""The API's request bodies, derived from the saved models so their limits never drift apart.

A body carries the same fields, types and limits (ranges, patterns, lengths) as what workers.json
stores, without the saved model's cross-field checks: those run once the change is applied to the
stored worker (so a masked secret can first be replaced by the stored one it stands for).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any

from pydantic import Field, create_model

from .models import Listen, MasterConfig, PoolConfig, Settings, StrictModel, WorkerConfig


def derived_model(
    model: type[StrictModel],
    name: str,
    doc: str,
    *,
    optional: Collection[str] | None = None,
    descriptions: Mapping[str, str] | None = None,
    exclude: Collection[str] = (),
) -> type[StrictModel]:
    """A body model with `model`'s fields and limits; the fields in `optional` (all when None)
    become optional with a null default, meaning "not given". Fields in `exclude` are the
    master's own: a body naming one is refused."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name in exclude:
            continue
        loose = optional is None or field_name in optional
        annotation: Any = info.annotation | None if loose else info.annotation
        if info.metadata:
            annotation = Annotated[(annotation, *info.metadata)]
        description = (descriptions or {}).get(field_name, info.description)
        if loose:
            field = Field(None, description=description)
        elif info.default_factory is not None:
            field = Field(default_factory=info.default_factory, description=description)
        elif info.is_required():
            field = Field(description=description)
        else:
            field = Field(info.default, description=description)
        fields[field_name] = (annotation, field)
    return create_model(name, __base__=StrictModel, __doc__=doc, __module__=__name__, **fields)


MASTER_ONLY_FIELDS = ("managed_by",)
"""Worker fields only the master sets (on the entries it manages); no request body carries them."""

WorkerCreate = derived_model(
    WorkerConfig, "WorkerCreate", "POST /distributed/workers. The id is derived from the name when left out.", optional=("id",),
    exclude=MASTER_ONLY_FIELDS,
)
WorkerPatch = derived_model(
    WorkerConfig, "WorkerPatch", "PATCH /distributed/workers/{id}: only the fields given change.",
    descriptions={
        "auth_token": "A masked value (as GET returns it) keeps the stored token; null removes it.",
        "headers": "Masked values keep the stored ones; headers left out are removed.",
    },
    exclude=MASTER_ONLY_FIELDS,
)
MasterPatch = derived_model(MasterConfig, "MasterPatch", "The master's fields to change.")
SettingsPatch = derived_model(Settings, "SettingsPatch", "The settings to change.")
PoolPatch = derived_model(
    PoolConfig, "PoolPatch", "PATCH /distributed/pools/{name}: only the fields given change; a pool keeps its name.", exclude=("name",),
)


class ConfigPatch(StrictModel):
    """PATCH /distributed/config: master and settings, each field optional."""

    master: MasterPatch | None = None  # type: ignore[valid-type]
    settings: SettingsPatch | None = None  # type: ignore[valid-type]


HostWorkerCreate = derived_model(
    WorkerConfig, "HostWorkerCreate",
    "POST /distributed/host/workers (and a managing master's /distributed/hosts/{id}/workers): one more worker on a host's "
    "free GPU (null: a CPU worker, on a host without GPUs).",
    optional=("cuda_device",), exclude=set(WorkerConfig.model_fields) - {"cuda_device", "listen"},
)


class HostWorkerPatch(StrictModel):
    """PATCH /distributed/hosts/{host_id}/workers/{worker_id}: where the host's worker listens."""

    listen: Listen
