"""Results of analyses (DVHs, goals, SUV statistics, response, registration QA) kept in the index."""
