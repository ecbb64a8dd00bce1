"""Call detail records: the record, the durable spool, the SQLite/PostgreSQL stores and reports.

The server uses ``CdrPipeline`` (start / append / flush / stop); see docs/cdr.md.
"""

from cdr.pipeline import CdrPipeline
from cdr.record import CdrRecord, Direction, Disposition
from cdr.store import CdrStore, open_store
from cdr.usage import Usage

__all__ = ["CdrPipeline", "CdrRecord", "CdrStore", "Direction", "Disposition", "Usage", "open_store"]
