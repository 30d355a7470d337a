# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_chainwatch_global_optspecs
    string join \n config= log-format= h/help V/version
end

function __fish_chainwatch_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_chainwatch_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_chainwatch_using_subcommand
    set -l cmd (__fish_chainwatch_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c chainwatch -n "__fish_chainwatch_needs_command" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_needs_command" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -s V -l version -d 'Print version'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "run" -d 'Run the watchdog daemon'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "client-connect" -d 'OpenVPN client-connect hook: write the client\'s address to FILE'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "tls-verify" -d 'OpenVPN tls-verify hook: refuse a client the hub does not admit'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "status" -d 'Show what the local daemon is doing now'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "fleet" -d 'Show every instance of the fleet from EC2 and check the chain'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "config" -d 'Check the config, the PKI and the IAM permissions'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "maint" -d 'Hold fences off an instance or the fleet for patching'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "switchover" -d 'Hand this node\'s ID over to its watcher without a fence (planned switchover; the hub included) and report the new holder and the overlay whole again'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "ack" -d 'Let this node fence again after its fence budget held a fence'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "generate-assets" -d 'Write the shell completions and man pages (for packaging)'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "hosts" -d 'Print the /etc/hosts block of the layout'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "iam-policy" -d 'Print the least-privilege IAM policy for the configured fleet'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "broker-definitions" -d 'Print the RabbitMQ definitions (topology, least-privilege permissions) for `rabbitmqctl import_definitions`'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "worker" -d 'Consume transition events and run the Ansible playbooks'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "history" -d 'Show role transitions from CloudWatch Logs'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "render-user-data" -d 'Print the EC2 user-data (#cloud-config) of one instance'
complete -c chainwatch -n "__fish_chainwatch_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand run" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand run" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand run" -l observe -d 'Probe, decide and log what would be done, but never fence, take over or touch OpenVPN'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand client-connect" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand client-connect" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand client-connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand tls-verify" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand tls-verify" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand tls-verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand status" -l socket -d 'Status socket [default: node.status_socket from the config]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand status" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand status" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand status" -l json -d 'Print JSON instead of a table'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand status" -l check -d 'Print one line and exit 0 (OK), 1 (WARNING), 2 (CRITICAL: the daemon does not answer, or a power fence was never confirmed), as a Nagios plugin'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand fleet" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand fleet" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand fleet" -l json -d 'Print JSON (`members`, `live`, `findings`, `status`) instead of a table'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand fleet" -l check -d 'Exit 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN: EC2 could not be read) by the findings: a hole in the IDs, two holders of one slot, a fenced instance still running, a holder nobody watches'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand fleet" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and not __fish_seen_subcommand_from check help" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and not __fish_seen_subcommand_from check help" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Validate the config file and the PKI files, and prove the IAM permissions with DryRun calls of StopInstances, CreateTags, DescribeInstances and (with an Elastic IP) AssociateAddress'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from check" -l role -d 'The role whose PKI files to check [default: both; the check passes when the PKI is complete for at least one]' -r -f -a "frontend\t'OpenVPN server (ID 1) and clients; frontend1 owns the public address'
backend\t'MySQL primary (ID 1) and replicas'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from check" -l instance -d 'The instance the DryRun calls name [default: identity.instance_id, else the first instance of the fleet]' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from check" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from check" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from check" -l offline -d 'Skip the EC2 permission proof (no API calls)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate the config file and the PKI files, and prove the IAM permissions with DryRun calls of StopInstances, CreateTags, DescribeInstances and (with an Elastic IP) AssociateAddress'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -f -a "on" -d 'Start maintenance: no fence (so no takeover) of the target until it ends'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -f -a "off" -d 'End maintenance now'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -f -a "list" -d 'The instances with a maintenance tag, active or expired'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and not __fish_seen_subcommand_from on off list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from on" -l for -d 'How long: `30m`, `2h` (at most 7 days)' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from on" -l instance -d 'This instance [default: identity.instance_id]' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from on" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from on" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from on" -l fleet -d 'Every instance of the fleet (a freeze: no fence at all)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from on" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from off" -l instance -d 'This instance [default: identity.instance_id]' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from off" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from off" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from off" -l fleet -d 'Every instance of the fleet (a freeze: no fence at all)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from off" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from list" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from list" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from help" -f -a "on" -d 'Start maintenance: no fence (so no takeover) of the target until it ends'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from help" -f -a "off" -d 'End maintenance now'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from help" -f -a "list" -d 'The instances with a maintenance tag, active or expired'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand maint; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -l role -d 'The role to switch over: must be this node\'s' -r -f -a "frontend\t'OpenVPN server (ID 1) and clients; frontend1 owns the public address'
backend\t'MySQL primary (ID 1) and replicas'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -l to -d 'The ID that takes this node\'s over: its watcher, the next ID (the chain hands an ID only to its watcher)' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -l catch-up -d 'On backend1: how long replicas may take to receive the primary\'s whole binary log once it is read-only' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -l timeout -d 'How long to wait for the overlay to be whole again before giving up (exit 1)' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand switchover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand ack" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand ack" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand ack" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand generate-assets" -l out -d 'Directory to write `completions/` and `man/` into' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand generate-assets" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand generate-assets" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand generate-assets" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand hosts" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand hosts" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand hosts" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand iam-policy" -l role -d 'The role whose instance profile the policy is for (each role has its own)' -r -f -a "frontend\t'OpenVPN server (ID 1) and clients; frontend1 owns the public address'
backend\t'MySQL primary (ID 1) and replicas'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand iam-policy" -l pki-source -d 'Where the instances fetch their PKI at boot, as given to `render-user-data --pki-source`: ssm:/prefix, s3://bucket/prefix/ or baked' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand iam-policy" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand iam-policy" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand iam-policy" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand broker-definitions" -l vhost -d 'The vhost [default: the one of the first `announce.rabbitmq_urls`, else `/`]' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand broker-definitions" -l publisher -d 'A broker user the nodes publish as; repeat for each [default: `worker.publishers`]' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand broker-definitions" -l worker-user -d 'The broker user the worker consumes as' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand broker-definitions" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand broker-definitions" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand broker-definitions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and not __fish_seen_subcommand_from dead-letters replay help" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and not __fish_seen_subcommand_from dead-letters replay help" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and not __fish_seen_subcommand_from dead-letters replay help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and not __fish_seen_subcommand_from dead-letters replay help" -f -a "dead-letters" -d 'List the dead-lettered events with the reason each was refused (they stay in the dead-letter queue)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and not __fish_seen_subcommand_from dead-letters replay help" -f -a "replay" -d 'Publish one dead-lettered event again, as the worker\'s broker user, and take it out of the dead-letter queue. The worker checks it anew (fleet, EC2, epochs): a replay is a second look, never a bypass'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and not __fish_seen_subcommand_from dead-letters replay help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from dead-letters" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from dead-letters" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from dead-letters" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from replay" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from replay" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from help" -f -a "dead-letters" -d 'List the dead-lettered events with the reason each was refused (they stay in the dead-letter queue)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from help" -f -a "replay" -d 'Publish one dead-lettered event again, as the worker\'s broker user, and take it out of the dead-letter queue. The worker checks it anew (fleet, EC2, epochs): a replay is a second look, never a bypass'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand worker; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l role -d 'Only this role' -r -f -a "frontend\t'OpenVPN server (ID 1) and clients; frontend1 owns the public address'
backend\t'MySQL primary (ID 1) and replicas'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l since -d 'From this time: a duration ago (`90m`, `2h`, `7days`) or an RFC 3339 time (`2026-11-22T10:00:00Z`)' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l until -d 'Until this time (same forms); default: now' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l log-group -d 'Log group [default: announce.cloudwatch_log_group]' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -l json -d 'Print JSON (one array of events) instead of a table'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand history" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l role -d 'The instance\'s role' -r -f -a "frontend\t'OpenVPN server (ID 1) and clients; frontend1 owns the public address'
backend\t'MySQL primary (ID 1) and replicas'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l id -d 'Its initial ID' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l package-url -d 'Where the instance downloads the chainwatch .deb: s3://... or https://...; omit when it is baked into the image' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l pki-source -d 'Where it gets its OpenVPN PKI: ssm:/prefix (SecureString parameters <prefix>/ca.crt, <prefix>/<cn>.crt, <prefix>/<cn>.key, optional <prefix>/ta.key), s3://bucket/prefix/ (the vpn.pki_dir layout), or baked' -r
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l template -d 'Template [default: the one built into chainwatch, a copy of cloud-init/user-data.yaml.tmpl]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l config -d 'Config file [default: /etc/chainwatch/chainwatch.toml if present, else built-in defaults]' -r -F
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -l log-format -d 'Log format' -r -f -a "text\t'Human-readable lines'
json\t'One JSON object per line'"
complete -c chainwatch -n "__fish_chainwatch_using_subcommand render-user-data" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "run" -d 'Run the watchdog daemon'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "client-connect" -d 'OpenVPN client-connect hook: write the client\'s address to FILE'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "tls-verify" -d 'OpenVPN tls-verify hook: refuse a client the hub does not admit'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "status" -d 'Show what the local daemon is doing now'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "fleet" -d 'Show every instance of the fleet from EC2 and check the chain'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "config" -d 'Check the config, the PKI and the IAM permissions'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "maint" -d 'Hold fences off an instance or the fleet for patching'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "switchover" -d 'Hand this node\'s ID over to its watcher without a fence (planned switchover; the hub included) and report the new holder and the overlay whole again'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "ack" -d 'Let this node fence again after its fence budget held a fence'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "generate-assets" -d 'Write the shell completions and man pages (for packaging)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "hosts" -d 'Print the /etc/hosts block of the layout'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "iam-policy" -d 'Print the least-privilege IAM policy for the configured fleet'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "broker-definitions" -d 'Print the RabbitMQ definitions (topology, least-privilege permissions) for `rabbitmqctl import_definitions`'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "worker" -d 'Consume transition events and run the Ansible playbooks'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "history" -d 'Show role transitions from CloudWatch Logs'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "render-user-data" -d 'Print the EC2 user-data (#cloud-config) of one instance'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and not __fish_seen_subcommand_from run client-connect tls-verify status fleet config maint switchover ack generate-assets hosts iam-policy broker-definitions worker history render-user-data help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate the config file and the PKI files, and prove the IAM permissions with DryRun calls of StopInstances, CreateTags, DescribeInstances and (with an Elastic IP) AssociateAddress'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and __fish_seen_subcommand_from maint" -f -a "on" -d 'Start maintenance: no fence (so no takeover) of the target until it ends'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and __fish_seen_subcommand_from maint" -f -a "off" -d 'End maintenance now'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and __fish_seen_subcommand_from maint" -f -a "list" -d 'The instances with a maintenance tag, active or expired'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and __fish_seen_subcommand_from worker" -f -a "dead-letters" -d 'List the dead-lettered events with the reason each was refused (they stay in the dead-letter queue)'
complete -c chainwatch -n "__fish_chainwatch_using_subcommand help; and __fish_seen_subcommand_from worker" -f -a "replay" -d 'Publish one dead-lettered event again, as the worker\'s broker user, and take it out of the dead-letter queue. The worker checks it anew (fleet, EC2, epochs): a replay is a second look, never a bypass'
