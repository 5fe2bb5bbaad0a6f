-- The worker queues a `worker` token serves (NULL or empty for every other role).
ALTER TABLE api_tokens ADD COLUMN queues TEXT[];
