"""Shared fixtures: the executor matrix and the real media in ../shared/media."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_MEDIA = Path(os.environ.get("FRAMEPIPE_SHARED_MEDIA", REPO.parent / "shared" / "media"))

EXECUTORS = ("inline", "threads", "processes")

pytest_plugins: list[str] = ["clip_fixtures", "detection_fixtures"]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    """Runs a behaviour test once per executor."""
    return str(request.param)


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """../shared/media, or a skip that says why."""
    if not (SHARED_MEDIA / "videos").is_dir():
        pytest.skip(f"real test media not found at {SHARED_MEDIA} (../shared/media is absent)")
    return SHARED_MEDIA


@pytest.fixture(scope="session")
def media_video(shared_media: Path):  # type: ignore[no-untyped-def]
    """media_video("slow_traffic_small.mp4") -> Path inside ../shared/media/videos."""

    def find(name: str) -> Path:
        path = shared_media / "videos" / name
        if not path.exists():
            pytest.skip(f"{name} not found in {shared_media / 'videos'}")
        return path

    return find
