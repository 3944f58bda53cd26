"""The blacklist operations and their guarantees, over the XAPI client and the safety journal.

`entries` holds the single-entry operations, `bulk_delete` the bulk engine, `restore` the undo,
`history` what the journal shows; `journaling`, `outcomes` and `reporting` are what they share.
"""
