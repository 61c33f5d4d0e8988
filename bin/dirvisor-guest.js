#!/usr/bin/env node
import '../dist/guest-agent/cli.js';
