"""``metapose data``: dataset tools (LSP / LSPet import)."""

from __future__ import annotations

import argparse

from metapose.cli.common import (
    Commands,
    TqdmProgress,
)


def cmd_import_lsp(args: argparse.Namespace) -> int:
    from metapose.data.lsp import import_lsp

    out = import_lsp(args.joints, args.images, args.out, progress=TqdmProgress(not args.quiet))
    print(f"wrote {out}")
    return 0


def register(sub: Commands) -> None:
    """Add the group's commands to the ``metapose`` parser."""
    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser(
        "import-lsp", help="LSP / LSPet joints.mat -> COCO person_keypoints JSON"
    )
    q.add_argument("--joints", required=True, help="joints.mat (14x3xN LSPet or 3x14xN LSP)")
    q.add_argument("--images", required=True, help="folder of im*.jpg")
    q.add_argument("--out", required=True, help="JSON to write")
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=cmd_import_lsp)
