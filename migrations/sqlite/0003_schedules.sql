-- Cron and one-shot timers next to intervals.

ALTER TABLE timer ADD COLUMN schedule TEXT; -- null: every_ms interval; else JSON {"cron", "timezone"} or {"once"}
