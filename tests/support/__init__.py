"""Helpers shared by the test suites: real servers, real CLI clients and generated images."""
