"""What a running tidings process holds: settings, the database and the PII cipher."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from tidings.config import Settings, load_secrets
from tidings.db.engine import Database, create_database
from tidings.db.migrate import upgrade_database
from tidings.security.crypto import PiiCipher, install_cipher
from tidings.security.keycheck import verify_keys
from tidings.security.tokens import TokenSigner


@dataclass
class Runtime:
    settings: Settings
    database: Database
    cipher: PiiCipher

    @cached_property
    def signer(self) -> TokenSigner:
        """Signs links in mail, keyed from the same secret as the blind index."""
        return TokenSigner(self.cipher.worker_args()[1])

    async def close(self) -> None:
        await self.database.dispose()


async def open_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    """Resolve secrets, install the cipher, connect, and (by default) apply pending migrations."""
    secrets = load_secrets(settings)
    cipher = PiiCipher(secrets.encryption_keys, secrets.hmac_key)
    install_cipher(cipher)
    database = create_database(settings)
    if migrate:
        await upgrade_database(database)
        await verify_keys(database, cipher)
    return Runtime(settings=settings, database=database, cipher=cipher)
