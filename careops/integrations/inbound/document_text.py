"""Text out of attached files (PDF, plain text), for whoever triages and for the AI layer."""

from __future__ import annotations

from io import BytesIO

TEXT_LIMIT = 200_000
_PDF_PAGES = 50


def extract_text(content_type: str, data: bytes) -> str | None:
    """The text of a PDF (first 50 pages) or a text file, for triage; None for anything else or a
    file that cannot be read (it is kept all the same)."""
    if content_type == "application/pdf" or data[:5] == b"%PDF-":
        try:
            from pypdf import PdfReader
            from pypdf.errors import PyPdfError

            reader = PdfReader(BytesIO(data))
            pages = [page.extract_text() or "" for page in reader.pages[:_PDF_PAGES]]
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError):
            return None
        return "\n".join(pages)[:TEXT_LIMIT] or None
    if content_type.startswith("text/"):
        return data.decode("utf-8", errors="replace")[:TEXT_LIMIT]
    return None
