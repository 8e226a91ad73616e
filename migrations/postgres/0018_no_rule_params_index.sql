-- The GIN index on rule.action_params served no query (rules are found by
-- ref, trigger and action), cost every rule write, and has no SQLite
-- counterpart: the two dialects' schemas now agree index for index.
DROP INDEX IF EXISTS rule_action_params;
