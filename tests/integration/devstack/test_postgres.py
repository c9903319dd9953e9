from __future__ import annotations

import asyncpg
import pytest

from comfyfleet.devstack.errors import DevStackError
from tests.support import PostgresInfo


async def test_fresh_database_serves_queries(fresh_database: str) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO t VALUES (1, 'one')")
        assert await conn.fetchval("SELECT name FROM t WHERE id = 1") == "one"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
    finally:
        await conn.close()


async def test_each_test_gets_its_own_database(
    fresh_database: str, postgres_server: PostgresInfo
) -> None:
    conn = await asyncpg.connect(fresh_database)
    try:
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        name = await conn.fetchval("SELECT current_database()")
    finally:
        await conn.close()
    assert tables == 0
    assert fresh_database == postgres_server.dsn_for(name)


async def test_server_listens_on_loopback_with_a_socket_in_the_data_dir(
    postgres_server: PostgresInfo,
) -> None:
    conn = await asyncpg.connect(postgres_server.dsn)
    try:
        listen = await conn.fetchval("SHOW listen_addresses")
        sockets = await conn.fetchval("SHOW unix_socket_directories")
    finally:
        await conn.close()
    assert listen == "127.0.0.1"
    assert sockets == str(postgres_server.server.pgdata)
    unix = await asyncpg.connect(host=sockets, port=postgres_server.port, user="postgres")
    await unix.close()


def test_create_database_is_idempotent_and_names_are_checked(
    postgres_server: PostgresInfo,
) -> None:
    first = postgres_server.create_database("t_idempotent")
    assert postgres_server.create_database("t_idempotent") == first
    postgres_server.drop_database("t_idempotent")
    with pytest.raises(ValueError, match="must match"):
        postgres_server.create_database('x"; DROP DATABASE postgres; --')
    with pytest.raises(DevStackError, match="psql failed"):
        postgres_server.server.psql("SELECT * FROM no_such_table")
