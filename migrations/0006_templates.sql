-- Templates: versioned notification content, rendered at enqueue
-- (docs/templates.md). A template is a stream of versions: each PUT appends
-- TemplateVersionRecorded (id = the template's key, version = 1, 2, ...);
-- old versions stay readable, and a notification's client operation names
-- the key and version it was rendered from.

select tidings.declare_actor('template_admin', 'Records template versions (PUT /v1/templates/:key, admin scope).');

select tidings.declare_stream('template.versions', 'template', 'event', null,
  array['TemplateVersionRecorded'],
  'Versions of notification templates (id = template key): per channel content, per locale variants. The current template is the latest version.');

-- Versions count from 1 per key without gaps or repeats: the writer takes a
-- lock per key and counts (src/templates/template.repository.ts); this
-- index makes a second version with the same number impossible even so.
create unique index template_versions_one_per_number on template.versions (id, ((payload->>'version')::integer));

select tidings.declare_producer('template.versions', 'template_admin');
-- The admin compares a new version with the current one; the API (and the
-- enqueue, which renders as the reader before appending as the client)
-- reads them.
select tidings.declare_reader('template.versions', 'template_admin');
select tidings.declare_reader('template.versions', 'reader', true);
