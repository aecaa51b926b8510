"""The HTTP contract as pydantic models, one module per resource: requests are validated with
them and the OpenAPI document is generated from them (``api/openapi.py``), so the two cannot
disagree. ``common`` holds what every resource shares: the strict base, number, matrix and
text fields, and the problem body of every error. The reason to change is how the contract's
models are split by resource."""
