"""Provider credentials: OAuth accounts of the vendors' CLIs (Codex, Claude Code, Gemini CLI, Antigravity),
stored encrypted, refreshed before they expire, disabled when their refresh token stops working."""

from engine.credentials.model import (
    PROVIDER_TYPES,
    AccessToken,
    Credential,
    CredentialList,
    ImportResult,
    RefreshAttempt,
    RefreshRequest,
    RefreshSummary,
)
from engine.credentials.service import Credentials

__all__ = ["PROVIDER_TYPES", "AccessToken", "Credential", "CredentialList", "Credentials", "ImportResult",
           "RefreshAttempt", "RefreshRequest", "RefreshSummary"]
