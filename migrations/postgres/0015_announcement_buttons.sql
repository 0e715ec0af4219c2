-- An announcement may carry a prompt's buttons (JSON: [{"id", "label", "style"}]): an approval
-- asked on the console, shown in another platform's channel too, delivered like any
-- announcement (nothing lost while that platform is away).
ALTER TABLE announcements ADD COLUMN buttons TEXT;
