from memory_agent.cli import main

main()
