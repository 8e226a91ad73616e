-- SQLite's gates lose their rowid (one B-tree fewer per gate written and
-- deleted); PostgreSQL's tables have no rowid: nothing to do.
SELECT 1;
