(define (problem vlmrl_pick_cool_then_place_in_recep_Tomato_None_Shelf_1)
    (:domain alfred)
    (:objects
        agent1 - agent
        loc_bar_0 - location
        loc_bar_1 - location
        loc_bar_2 - location
        loc_bar_3 - location
        loc_bar_4 - location
        loc_bar_5 - location
        loc_bar_6 - location
        loc_bar_7 - location
        CounterTop_bar_1 - receptacle
        Cabinet_bar_1 - receptacle
        Fridge_bar_1 - receptacle
        Microwave_bar_1 - receptacle
        Sink_bar_1_bar_SinkBasin - receptacle
        DiningTable_bar_1 - receptacle
        Shelf_bar_1 - receptacle
        Apple_bar_1 - object
        Apple_bar_2 - object
        Mug_bar_1 - object
        Potato_bar_1 - object
        Plate_bar_1 - object
        Egg_bar_1 - object
        Tomato_bar_1 - object
        Fork_bar_1 - object
        Tomato_bar_2 - object
        AppleType - otype
        EggType - otype
        ForkType - otype
        MugType - otype
        PlateType - otype
        PotatoType - otype
        TomatoType - otype
        CabinetType - rtype
        CounterTopType - rtype
        DiningTableType - rtype
        FridgeType - rtype
        MicrowaveType - rtype
        ShelfType - rtype
        SinkBasinType - rtype
    )
    (:init
        (atLocation agent1 loc_bar_0)
        (receptacleType CounterTop_bar_1 CounterTopType)
        (receptacleAtLocation CounterTop_bar_1 loc_bar_1)
        (receptacleType Cabinet_bar_1 CabinetType)
        (receptacleAtLocation Cabinet_bar_1 loc_bar_2)
        (openable Cabinet_bar_1)
        (receptacleType Fridge_bar_1 FridgeType)
        (receptacleAtLocation Fridge_bar_1 loc_bar_3)
        (openable Fridge_bar_1)
        (receptacleType Microwave_bar_1 MicrowaveType)
        (receptacleAtLocation Microwave_bar_1 loc_bar_4)
        (openable Microwave_bar_1)
        (receptacleType Sink_bar_1_bar_SinkBasin SinkBasinType)
        (receptacleAtLocation Sink_bar_1_bar_SinkBasin loc_bar_5)
        (receptacleType DiningTable_bar_1 DiningTableType)
        (receptacleAtLocation DiningTable_bar_1 loc_bar_6)
        (receptacleType Shelf_bar_1 ShelfType)
        (receptacleAtLocation Shelf_bar_1 loc_bar_7)
        (objectType Apple_bar_1 AppleType)
        (inReceptacle Apple_bar_1 CounterTop_bar_1)
        (objectAtLocation Apple_bar_1 loc_bar_1)
        (pickupable Apple_bar_1)
        (cleanable Apple_bar_1)
        (heatable Apple_bar_1)
        (coolable Apple_bar_1)
        (objectType Apple_bar_2 AppleType)
        (inReceptacle Apple_bar_2 DiningTable_bar_1)
        (objectAtLocation Apple_bar_2 loc_bar_6)
        (pickupable Apple_bar_2)
        (cleanable Apple_bar_2)
        (heatable Apple_bar_2)
        (coolable Apple_bar_2)
        (objectType Mug_bar_1 MugType)
        (inReceptacle Mug_bar_1 Cabinet_bar_1)
        (objectAtLocation Mug_bar_1 loc_bar_2)
        (pickupable Mug_bar_1)
        (cleanable Mug_bar_1)
        (heatable Mug_bar_1)
        (coolable Mug_bar_1)
        (objectType Potato_bar_1 PotatoType)
        (inReceptacle Potato_bar_1 Fridge_bar_1)
        (objectAtLocation Potato_bar_1 loc_bar_3)
        (pickupable Potato_bar_1)
        (cleanable Potato_bar_1)
        (heatable Potato_bar_1)
        (coolable Potato_bar_1)
        (objectType Plate_bar_1 PlateType)
        (inReceptacle Plate_bar_1 Shelf_bar_1)
        (objectAtLocation Plate_bar_1 loc_bar_7)
        (pickupable Plate_bar_1)
        (cleanable Plate_bar_1)
        (heatable Plate_bar_1)
        (coolable Plate_bar_1)
        (objectType Egg_bar_1 EggType)
        (inReceptacle Egg_bar_1 DiningTable_bar_1)
        (objectAtLocation Egg_bar_1 loc_bar_6)
        (pickupable Egg_bar_1)
        (heatable Egg_bar_1)
        (coolable Egg_bar_1)
        (objectType Tomato_bar_1 TomatoType)
        (inReceptacle Tomato_bar_1 CounterTop_bar_1)
        (objectAtLocation Tomato_bar_1 loc_bar_1)
        (pickupable Tomato_bar_1)
        (cleanable Tomato_bar_1)
        (heatable Tomato_bar_1)
        (coolable Tomato_bar_1)
        (objectType Fork_bar_1 ForkType)
        (inReceptacle Fork_bar_1 DiningTable_bar_1)
        (objectAtLocation Fork_bar_1 loc_bar_6)
        (pickupable Fork_bar_1)
        (cleanable Fork_bar_1)
        (objectType Tomato_bar_2 TomatoType)
        (inReceptacle Tomato_bar_2 Fridge_bar_1)
        (objectAtLocation Tomato_bar_2 loc_bar_3)
        (pickupable Tomato_bar_2)
        (cleanable Tomato_bar_2)
        (heatable Tomato_bar_2)
        (coolable Tomato_bar_2)
        (canContain CabinetType AppleType)
        (canContain CabinetType EggType)
        (canContain CabinetType ForkType)
        (canContain CabinetType MugType)
        (canContain CabinetType PlateType)
        (canContain CabinetType PotatoType)
        (canContain CabinetType TomatoType)
        (canContain CounterTopType AppleType)
        (canContain CounterTopType EggType)
        (canContain CounterTopType ForkType)
        (canContain CounterTopType MugType)
        (canContain CounterTopType PlateType)
        (canContain CounterTopType PotatoType)
        (canContain CounterTopType TomatoType)
        (canContain DiningTableType AppleType)
        (canContain DiningTableType EggType)
        (canContain DiningTableType ForkType)
        (canContain DiningTableType MugType)
        (canContain DiningTableType PlateType)
        (canContain DiningTableType PotatoType)
        (canContain DiningTableType TomatoType)
        (canContain FridgeType AppleType)
        (canContain FridgeType EggType)
        (canContain FridgeType ForkType)
        (canContain FridgeType MugType)
        (canContain FridgeType PlateType)
        (canContain FridgeType PotatoType)
        (canContain FridgeType TomatoType)
        (canContain MicrowaveType AppleType)
        (canContain MicrowaveType EggType)
        (canContain MicrowaveType ForkType)
        (canContain MicrowaveType MugType)
        (canContain MicrowaveType PlateType)
        (canContain MicrowaveType PotatoType)
        (canContain MicrowaveType TomatoType)
        (canContain ShelfType AppleType)
        (canContain ShelfType EggType)
        (canContain ShelfType ForkType)
        (canContain ShelfType MugType)
        (canContain ShelfType PlateType)
        (canContain ShelfType PotatoType)
        (canContain ShelfType TomatoType)
        (canContain SinkBasinType AppleType)
        (canContain SinkBasinType EggType)
        (canContain SinkBasinType ForkType)
        (canContain SinkBasinType MugType)
        (canContain SinkBasinType PlateType)
        (canContain SinkBasinType PotatoType)
        (canContain SinkBasinType TomatoType)
    )
(:goal
            (and
                (exists (?r - receptacle)
                    (exists (?o - object)
                        (and
                            (coolable ?o)
                            (objectType ?o TomatoType)
                            (receptacleType ?r ShelfType)
                            (isCool ?o)
                            (inReceptacle ?o ?r)
                        )
                    )
                )
            )
        )
    )
