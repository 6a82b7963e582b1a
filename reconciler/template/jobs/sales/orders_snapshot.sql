SELECT status, count(*) AS orders
FROM (VALUES ('open'), ('shipped'), ('shipped'), ('returned')) AS o(status)
GROUP BY status
ORDER BY status;
