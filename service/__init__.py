"""The use cases: what a tenant's request, or a worker's ending, does to the stored state.

Each use case is a function that takes its ``Context`` explicitly (settings, database,
dispatcher, tenant), works in the store's transactions, sends the task messages after the
commits, and raises the store's errors (or ``service.errors``) for the caller to answer:
the API's handlers and the dashboard's forms call the same functions, and one map in
``api.errors`` turns the errors into problems. The reason to change is the convention every use
case follows: its context, transactions, messages and errors.
"""
