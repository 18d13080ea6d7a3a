"""Record batches and the key partitioner: pure byte-level code shared by brokers and clients."""

from .batch import (HEADER_SIZE, MAGIC, BatchHeader, Record, decode_records, encode_batch, iter_headers,
                    parse_header, records_in, validate_batch)
from .partitioner import KeyPartitioner, murmur2, partition_for_key

__all__ = ["HEADER_SIZE", "MAGIC", "BatchHeader", "Record", "decode_records", "encode_batch", "iter_headers",
           "parse_header", "records_in", "validate_batch", "KeyPartitioner", "murmur2", "partition_for_key"]
