-- The notification view shows each channel's attempts and last error while a
-- send is being retried. Attempts and errors live in the channel operation
-- streams' handling state, so the projection bot may read it (read only).
grant select on email.operations__handling to tidings_projection_bot;
grant select on slack.operations__handling to tidings_projection_bot;
