"""Add models that no endpoint declares as a parameter to the OpenAPI schema.

The ingest endpoint reads its body by hand, so FastAPI never sees the Batch
model; its request body refers to #/components/schemas/Batch, put there here.
"""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

_REF_TEMPLATE = "#/components/schemas/{model}"


def add_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                components.update(_component_schemas(model))
            app.openapi_schema = schema
        return app.openapi_schema

    _replace_openapi(app, openapi)


def _component_schemas(model: type[BaseModel]) -> dict[str, Any]:
    """The model's schema and those of the models it uses, keyed by name."""
    schema = model.model_json_schema(ref_template=_REF_TEMPLATE)
    nested: dict[str, Any] = schema.pop("$defs", {})
    return {**nested, model.__name__: schema}


def _replace_openapi(app: FastAPI, openapi: Callable[[], dict[str, Any]]) -> None:
    # FastAPI's documented way to customise the schema is replacing this method.
    app.openapi = openapi  # type: ignore[method-assign]
