"""Hostile and broken metadata: every case raises MetadataError, fast, and reads nothing."""

from __future__ import annotations

import time

from twisted.trial.unittest import SynchronousTestCase

from siprecd.metadata import DEFAULT_MAX_SIZE, MetadataError, parse_metadata
from siprecd.metadata import parse as parse_module
from tests.test_metadata import sample

VALID = (
    b'<recording xmlns="urn:ietf:params:xml:ns:recording:1">'
    b"<datamode>complete</datamode></recording>"
)


class HardeningTests(SynchronousTestCase):
    def assertRefused(self, data: bytes, message: str, line: int | None) -> MetadataError:
        started = time.monotonic()
        error = self.assertRaises(MetadataError, parse_metadata, data)
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertIn(message, str(error))
        self.assertEqual(error.line, line)
        return error

    def test_billion_laughs(self) -> None:
        error = self.assertRefused(
            sample("hostile/billion-laughs.xml"), "metadata has a DOCTYPE, which is not allowed", 2
        )
        self.assertNotIn("lollol", str(error))

    def test_external_entity_file(self) -> None:
        error = self.assertRefused(
            sample("hostile/xxe-file.xml"), "metadata has a DOCTYPE, which is not allowed", 2
        )
        self.assertNotIn("root:", str(error))

    def test_external_dtd_and_parameter_entity(self) -> None:
        self.assertRefused(
            sample("hostile/xxe-parameter.xml"), "metadata has a DOCTYPE, which is not allowed", 2
        )

    def test_doctype_in_utf16(self) -> None:
        body = (
            '<?xml version="1.0" encoding="UTF-16"?>'
            '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><recording>&x;</recording>'
        ).encode("utf-16")
        self.assertRefused(body, "metadata has a DOCTYPE", None)

    def test_parser_itself_neither_expands_nor_loads(self) -> None:
        """With the byte scan switched off, the lxml settings are the second line of defence."""
        self.patch(parse_module, "_DOCTYPE_PATTERNS", ())
        error = self.assertRefused(
            sample("hostile/xxe-file.xml"), "metadata has a DOCTYPE, which is not allowed", None
        )
        self.assertNotIn("root:", str(error))
        # libxml2 caps entity amplification when huge_tree is off.
        self.assertRefused(sample("hostile/billion-laughs.xml"), "amplification", 16)

    def test_oversized(self) -> None:
        padding = b"<!--" + b"x" * DEFAULT_MAX_SIZE + b"-->"
        error = self.assertRefused(VALID + padding, "over the 1048576 byte limit", None)
        self.assertTrue(str(error).startswith(f"metadata is {len(VALID + padding)} bytes"))

    def test_size_limit_parameter(self) -> None:
        self.assertEqual(parse_metadata(VALID, max_size=len(VALID)).datamode, "complete")
        error = self.assertRaises(MetadataError, parse_metadata, VALID, max_size=len(VALID) - 1)
        self.assertIn(f"over the {len(VALID) - 1} byte limit", str(error))

    def test_deep_nesting(self) -> None:
        body = b"<recording>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</recording>"
        self.assertRefused(body, "metadata is not well-formed XML", 1)

    def test_not_xml(self) -> None:
        self.assertRefused(
            sample("hostile/not-xml.txt"),
            "metadata is not well-formed XML: Start tag expected, '<' not found, column 1",
            1,
        )

    def test_truncated(self) -> None:
        self.assertRefused(sample("hostile/truncated.xml"), "metadata is not well-formed XML", 5)
        self.assertRefused(VALID[:-5], "metadata is not well-formed XML", 1)

    def test_error_line_counts_leading_whitespace(self) -> None:
        self.assertRefused(
            b"\r\n\n<recording><a></recording>", "Opening and ending tag mismatch", 3
        )

    def test_empty(self) -> None:
        self.assertRefused(b"", "metadata body is empty", None)
        self.assertRefused(b" \r\n\t", "metadata body is empty", None)

    def test_bad_encoding(self) -> None:
        self.assertRefused(b"<recording>\xff\xfe</recording>", "Invalid bytes", 1)

    def test_wrong_root(self) -> None:
        self.assertRefused(
            sample("hostile/wrong-root.xml"),
            "root element is <conference-info>, not <recording>",
            2,
        )

    def test_bad_datamode(self) -> None:
        self.assertRefused(
            sample("hostile/bad-datamode.xml"),
            "datamode 'snapshot' is neither complete nor partial (line 4)",
            4,
        )

    def test_trailing_multipart_junk(self) -> None:
        self.assertRefused(VALID + b"\r\n--boundary--\r\n", "Extra content at the end", 2)

    def test_str_is_refused(self) -> None:
        self.assertRaises(TypeError, parse_metadata, VALID.decode())
